"""``distill export``: a pseudo-label COCO file as YOLO or Label Studio files.

Registered with the main parser through ``register(subparsers)``, as the other
plugins are. User errors are :class:`distill.errors.DistillError` subclasses,
which ``distill.cli.main`` prints as one line and exit status 2. Pure Python:
registering and running this command import no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.export import EXPORT_FORMATS


def register(sub: Any) -> None:
    """Adds the ``export`` command to the ``distill`` command line."""
    p = sub.add_parser(
        "export", help="pseudo-labels -> YOLO zip or Label Studio tasks (or COCO, as is)",
        description="Converts a COCO pseudo-label file (from `distill annotate`, the client "
                    "or the service) for labeling and training tools: an Ultralytics YOLO zip "
                    "(labels/, data.yaml, classes.txt), Label Studio tasks with predictions "
                    "(plus the labeling config as <out stem>.labelstudio.xml), or the COCO "
                    "file itself (CVAT: 'COCO 1.0' / 'COCO Keypoints 1.0').")
    p.add_argument("pseudo_json", type=Path, help="COCO pseudo-label file")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="format")
    p.add_argument("--out", required=True, type=Path,
                   help="file to write (.zip for yolo, .json for labelstudio and coco)")
    p.add_argument("--image-url-prefix", default=None, metavar="P",
                   help="labelstudio: prefix of each image's URL (default: "
                        "/data/local-files/?d=, Label Studio's local storage)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="yolo: copy the images (file names relative to DIR) into the zip")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from distill.coco import load_coco
    from distill.export import labelstudio_config_path, write_export

    if args.image_url_prefix is not None and args.format != "labelstudio":
        raise ConfigError("--image-url-prefix applies to --format labelstudio only")
    if args.images is not None and args.format != "yolo":
        raise ConfigError("--images applies to --format yolo only")
    if args.images is not None and not args.images.is_dir():
        raise ConfigError(f"--images {str(args.images)!r} is not a folder")
    coco = load_coco(args.pseudo_json)
    kwargs: dict[str, Any] = {}
    if args.image_url_prefix is not None:
        kwargs["image_url_prefix"] = args.image_url_prefix
    out = write_export(coco, args.format, args.out, images_dir=args.images, **kwargs)
    n_ann = sum(1 for a in coco["annotations"] if not a.get("iscrowd", 0))
    print(f"wrote {out}: {args.format}, {len(coco['images'])} images, {n_ann} pseudo-labels")
    if args.format == "labelstudio":
        print(f"wrote {labelstudio_config_path(out)}: the labeling config for those tasks")
    return 0

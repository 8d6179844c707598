"""``distill export``: a pseudo-label COCO file in one of the export formats.

The formats, their help and the options each takes come from
:data:`distill.exports.formats.EXPORT_FORMATS`. Registered with the main parser through
``register(subparsers)``, as the other plugins are. User errors are
:class:`distill.errors.DistillError` subclasses, which ``distill.cli.main`` prints as one
line and exit status 2. Pure Python: registering and running this command import no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.exports.formats import EXPORT_FORMATS, formats_help, formats_taking

# ExportOptions field -> its flag (the flags themselves are declared in register()).
_FLAGS = {"image_url_prefix": "--image-url-prefix", "images_dir": "--images"}


def register(sub: Any) -> None:
    """Adds the ``export`` command to the ``distill`` command line."""
    p = sub.add_parser(
        "export", help="pseudo-labels -> " + ", ".join(EXPORT_FORMATS) + " files",
        description="Converts a COCO pseudo-label file (from `distill annotate`, the client "
                    "or the service) for labeling and training tools. Formats: "
                    + formats_help() + ".")
    p.add_argument("pseudo_json", type=Path, help="COCO pseudo-label file")
    p.add_argument("--format", required=True, choices=list(EXPORT_FORMATS), dest="format",
                   help="see the formats above")
    p.add_argument("--out", required=True, type=Path, help="file to write, e.g. " + ", ".join(
        f"pseudo{f.suffix} ({f.name})" for f in EXPORT_FORMATS.values()))
    p.add_argument(_FLAGS["image_url_prefix"], default=None, metavar="P",
                   help=f"{'/'.join(formats_taking('image_url_prefix'))}: prefix of each "
                        "image's URL (default: /data/local-files/?d=, Label Studio's local "
                        "storage)")
    p.add_argument(_FLAGS["images_dir"], type=Path, default=None, metavar="DIR",
                   dest="images_dir",
                   help=f"{'/'.join(formats_taking('images_dir'))}: copy the images (file "
                        "names relative to DIR) into the output")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from distill.coco import load_coco, objects
    from distill.exports.formats import ExportOptions, write_export

    spec = EXPORT_FORMATS[args.format]
    given = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    for option in given:
        if option not in spec.options:
            raise ConfigError(f"{_FLAGS[option]} applies to --format "
                              f"{' / '.join(formats_taking(option))} only")
    if args.images_dir is not None and not args.images_dir.is_dir():
        raise ConfigError(f"--images {str(args.images_dir)!r} is not a folder")
    coco = load_coco(args.pseudo_json)
    out = write_export(coco, spec.name, args.out, ExportOptions(**given))
    print(f"wrote {out}: {spec.name}, {len(coco['images'])} images, "
          f"{len(objects(coco))} pseudo-labels")
    if spec.companion is not None:
        print(f"wrote {spec.companion.path_beside(out)}: {spec.companion.description}")
    return 0

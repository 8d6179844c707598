"""``distill cvat-merge``: CVAT's COCO export merged into a labeled set, as
``distill labelstudio-fetch`` merges a Label Studio project's annotations.

Registered with the main parser through ``register(subparsers)``, as the other plugins
are. Pure Python: no torch, no HTTP (the export is a file the user downloaded from CVAT).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Adds ``cvat-merge`` to the ``distill`` command line."""
    p = sub.add_parser(
        "cvat-merge", help="CVAT's COCO export (corrected annotations) merged into a "
                           "labeled set (COCO)",
        description="Reads a task's or project's export from CVAT ('COCO 1.0' or 'COCO "
                    "Keypoints 1.0': the zip, or the instances_default.json / "
                    "person_keypoints_default.json in it), maps its labels and skeleton "
                    "points by name to the labeled set's categories and keypoints, and "
                    "writes the labeled set with the annotated images added (an image it "
                    "has already, by file_name, takes the corrected annotations).")
    p.add_argument("export", type=Path, help="CVAT's COCO export: a .zip or a .json file")
    p.add_argument("--labeled", type=Path, required=True,
                   help="the labeled set (COCO): its categories, and what is merged into")
    p.add_argument("--out", type=Path, required=True, help="COCO file to write")
    p.add_argument("--keep-empty", action="store_true",
                   help="keep images without annotations as images without objects (CVAT "
                        "exports every frame, annotated or not)")
    p.add_argument("--corrections-only", action="store_true",
                   help="write only the export's annotations, not merged")
    p.set_defaults(func=_cmd_cvat_merge)


def _cmd_cvat_merge(args: argparse.Namespace) -> int:
    from distill.coco import load_coco
    from distill.imports.cvat import cvat_to_coco, read_export
    from distill.imports.labelstudio import write_corrections

    labeled = load_coco(args.labeled)
    found = cvat_to_coco(read_export(args.export), labeled["categories"], args.keep_empty)
    print(write_corrections(labeled, found.coco, found.skipped, args.out,
                            corrections_only=args.corrections_only, source=args.export.name))
    return 0

"""``distill teacher import`` and ``distill teacher stats``: bring a teacher trained elsewhere.

Registered with the main parser through ``register(subparsers)``, as the other
plugins are. User errors are :class:`distill.errors.DistillError` subclasses,
which ``distill.cli.main`` prints as one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# Pure Python: registering the commands imports no torch.
from distill.options import ARCHITECTURES, ONNX_ARCHITECTURES, TASKS


def register(sub: Any) -> None:
    """Adds the ``teacher`` command group to the ``distill`` command line."""
    p = sub.add_parser("teacher", help="import a teacher trained elsewhere; labeled-set stats",
                       description="Turn torchvision weights, an ONNX export (YOLO, RT-DETR) "
                                   "or a plug-in's model into a distill teacher checkpoint.")
    tsub = p.add_subparsers(dest="teacher_command", required=True, metavar="{import,stats}")

    i = tsub.add_parser(
        "import", help="torchvision / reference-script weights or an ONNX export -> teacher "
                       "checkpoint",
        description="Reads weights (a torchvision state dict, a torchvision reference-script "
                    "checkpoint, a distill checkpoint to re-card, or an ONNX export of an "
                    "Ultralytics YOLO / RT-DETR model), checks them against the architecture "
                    "and categories, and writes a teacher checkpoint with a card.")
    i.add_argument("--arch", required=True, metavar="ARCH",
                   help=f"one of {', '.join(ARCHITECTURES + ONNX_ARCHITECTURES)}, or an "
                        "architecture of an installed plug-in (entry points `distill.teachers`)")
    i.add_argument("--weights", required=True, type=Path,
                   help="weights file (.pth / .pt; .onnx for the -onnx architectures)")
    i.add_argument("--categories", required=True, metavar="COCO_JSON|DATA_YAML|coco",
                   help="a COCO JSON naming the categories (labels 1..N in its order, as "
                        "`distill train`), `coco` for models trained on COCO (torchvision's: "
                        "label = COCO category id; YOLO's: its 80 classes), or, for yolo-onnx "
                        "and rtdetr-onnx, the Ultralytics data.yaml the model was trained with "
                        "(names, kpt_shape, flip_idx)")
    i.add_argument("--labels", choices=("contiguous", "category-id"), default="contiguous",
                   help="how COCO_JSON's categories map to model labels: 1..N in file order "
                        "(`distill train`; default) or the category ids themselves "
                        "(torchvision's reference scripts)")
    i.add_argument("--out", required=True, type=Path, help="teacher checkpoint to write")
    stats = i.add_mutually_exclusive_group()
    stats.add_argument("--labeled-json", type=Path,
                       help="the labeled COCO set the teacher was trained on (for calibration)")
    stats.add_argument("--stats", type=Path, help="a file written by `distill teacher stats`")
    i.add_argument("--min-size", type=int, help="test-time shorter side (default: the arch's)")
    i.add_argument("--max-size", type=int, help="test-time longer-side cap")
    i.add_argument("--name", help="the teacher's name in its card (default: --out's stem)")
    i.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                   help="detector constructor option, VALUE as JSON when it parses "
                        "(e.g. box_score_thresh=0.01); repeatable")
    i.set_defaults(func=_cmd_import)

    s = tsub.add_parser("stats", help="labeled-set statistics for calibration, as a small file",
                        description="Writes what calibrated selection needs from a labeled "
                                    "COCO set (instances per image per category, visible "
                                    "keypoints per instance), for `import --stats`.")
    s.add_argument("labeled_json", type=Path, help="labeled COCO JSON")
    s.add_argument("--task", required=True, choices=TASKS)
    s.add_argument("--out", required=True, type=Path, help="stats JSON to write")
    s.set_defaults(func=_cmd_stats)


def _cmd_import(args: argparse.Namespace) -> int:
    from distill.checkpoint import save_checkpoint
    from distill.cli_args import parse_arch_options
    from distill.teachers.interface import ImportRequest
    from distill.teachers.labels import load_stats_file
    from distill.teachers.registry import family_for

    family = family_for(args.arch)  # an unknown architecture fails before any file is read
    stats = None if args.stats is None else load_stats_file(args.stats)
    card, state = family.import_teacher(ImportRequest(
        args.arch, args.weights, args.categories, stats=stats, min_size=args.min_size,
        max_size=args.max_size, name=args.name or args.out.stem,
        arch_options=parse_arch_options(args.arch_option), labeled_json=args.labeled_json,
        stats_source=None if args.stats is None else args.stats.name, labels=args.labels))
    save_checkpoint(args.out, card, state)
    kps = f", {len(card.keypoint_names)} keypoints" if card.task == "keypoints" else ""
    print(f"wrote {args.out}: teacher {card.provenance['name']!r}, {card.arch} ({card.task}), "
          f"{len(card.categories)} categories{kps}, {card.num_classes} outputs, "
          f"input {card.min_size}-{card.max_size} px")
    print(f"weights: {args.weights.name} ({card.provenance.get('source_format', family.name)}"
          f", sha256 {str(card.provenance.get('source_sha256', ''))[:12]})")
    if card.labeled_stats is None:
        print("warning: no labeled statistics, so calibrated selection (the default of "
              "`distill annotate` and of the service) will refuse this teacher; re-import "
              "with --labeled-json J or --stats S, or give explicit thresholds "
              "(--score-threshold, --keypoint-threshold)", file=sys.stderr)
        return 0
    st = card.labeled_stats
    print(f"labeled statistics ({card.provenance.get('labeled_stats_from')}): {st.images} images, "
          f"{sum(st.instances_per_image.values()):.2f} instances per image")
    uncovered = len(card.categories) - len(st.instances_per_image)
    if uncovered > 0:
        # calibrate.score_thresholds keeps nothing of a category without a target.
        print(f"warning: the statistics cover {len(st.instances_per_image)} of "
              f"{len(card.categories)} categories; calibrated selection keeps no pseudo-label "
              f"of the other {uncovered}", file=sys.stderr)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from distill.fileio import write_json_atomic
    from distill.teachers.labels import labeled_stats_from_json, stats_to_json

    stats = labeled_stats_from_json(args.labeled_json, args.task)
    write_json_atomic(args.out, stats_to_json(stats), indent=2)
    kps = "" if stats.visible_keypoints_per_instance is None else \
        f", {stats.visible_keypoints_per_instance:.2f} visible keypoints per instance"
    print(f"wrote {args.out}: {stats.images} images, {len(stats.instances_per_image)} "
          f"categories{kps}")
    return 0

"""The ``distill`` command line.

Core subcommands (``synth``, ``annotate``, ``card``) live here; ``train``,
``eval``, ``experiment`` come from ``training``, and ``serve``, ``worker``,
``client`` from ``service`` / ``worker``. Those packages are imported only
when present, so the core stays free of HTTP and Redis.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from distill.cli_args import add_selection_arguments
from distill.errors import ConfigError, DistillError
from distill.logs import configure_logging
from distill.options import (
    COMBINES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SYNTH_FAMILY,
    FUSIONS,
    POOLINGS,
    PRESETS,
    SCORINGS,
    SYNTH_FAMILIES,
    InferenceOptions,
    inference_defaults,
    inference_options_from,
)

# Modules that add subcommands through a `register(subparsers)` function; each imports its
# heavy dependencies inside its commands, so that `distill serve` runs without torch.
_PLUGINS = ("distill.teachers.cli", "distill.export_cli", "training.cli", "service.cli",
            "worker.cli")
_OWN_PACKAGES = frozenset({"distill", "jobs", "service", "worker", "training"})
_ENGINE_PACKAGES = frozenset({"torch", "torchvision", "pycocotools", "ensemble_boxes"})


def _cmd_synth(args: argparse.Namespace) -> int:
    from distill.data import generate

    splits = generate(Path(args.out), labeled=args.labeled, unlabeled=args.unlabeled,
                      test=args.test, seed=args.seed, shifted=args.shifted,
                      family=args.family, progress=True)
    for name, files in splits.items():
        print(f"{name:10s} {files.images_dir}  {files.keypoints_json.name}  "
              f"{files.boxes_json.name}")
    return 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    from distill.annotate import annotate_folder
    from distill.cli_args import selection_from_args
    from distill.pseudolabels import SelectionConfig
    from distill.threads import apply_thread_budget

    apply_thread_budget(args.threads)
    selection = SelectionConfig(**selection_from_args(args))
    report = annotate_folder(Path(args.teacher), Path(args.images), Path(args.out),
                             options=inference_options_from_args(args), selection=selection,
                             progress=not args.quiet)
    print(f"wrote {report.output}: {report.annotations} pseudo-labels on {report.images} "
          f"images ({report.failed} failed, {report.skipped_as_done} resumed from an earlier run)")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from distill.cardfile import read_card

    print(json.dumps(read_card(Path(args.checkpoint)).to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full parser, plugins included."""
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the synthetic data set")
    p.add_argument("out", help="output folder")
    p.add_argument("--labeled", type=int, default=150)
    p.add_argument("--unlabeled", type=int, default=600)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--shifted", type=int, default=0, help="unlabeled images of another look")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", choices=SYNTH_FAMILIES, default=DEFAULT_SYNTH_FAMILY,
                   help="the look: 'figures' (settings are chosen on it) or 'blocks' (other "
                        "figures, objects, backgrounds and sizes, kept for confirming them)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("annotate", help="pseudo-label a folder of images with a teacher")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt with a card)")
    p.add_argument("--images", required=True, help="folder of unlabeled images")
    p.add_argument("--out", required=True, help="COCO pseudo-label JSON to write")
    add_inference_arguments(p)
    add_selection_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_annotate)

    p = sub.add_parser("card", help="print a checkpoint's card")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_card)

    for module in _PLUGINS:
        try:
            plugin = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing and missing not in _OWN_PACKAGES | {module.split(".")[0]}:
                # An extra is not installed (say the API image, without torch): its
                # commands are absent rather than breaking every other command.
                logging.getLogger(__name__).debug("%s unavailable: %s", module, exc)
                continue
            if exc.name is not None and module.startswith(exc.name):
                continue  # that part of the project is not installed
            raise
        plugin.register(sub)
    return parser


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a teacher (defaults: InferenceOptions's,
    under the flat names of :data:`distill.options.INFERENCE_FLAGS`)."""
    d = inference_defaults()
    p.add_argument("--tta", default=d["tta"],
                   help=f"transform preset: {', '.join(PRESETS)}, "
                        "or a list like '224,256,320+flip' / 'x0.75,x1,x1.25+flip'")
    p.add_argument("--fusion", choices=FUSIONS, default=d["fusion"],
                   help="box fusion: NMS + box voting, or weighted boxes fusion")
    p.add_argument("--vote-iou", type=float, default=d["vote_iou"],
                   help="box-voting IoU threshold")
    p.add_argument("--vote-scoring", choices=SCORINGS, default=d["vote_scoring"])
    p.add_argument("--box-pooling", choices=POOLINGS, default=d["box_pooling"],
                   help="box fusion pools each transform's final detections (nms) or, as "
                        "Detectron, its raw per-class boxes before NMS (raw; default for "
                        "--fusion vote, while wbf takes only nms)")
    p.add_argument("--heatmap-combine", choices=COMBINES, default=d["heatmap_combine"])
    p.add_argument("--size-dependent", action="store_true",
                   help="small boxes ignore down-scaled passes, large ones up-scaled passes")
    p.add_argument("--size-dependent-area", type=float, default=d["size_dependent_area"],
                   help="below this area in original-image pixels a box is small "
                        "(Detectron's AREA_TH, 180^2)")
    p.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:N or auto")
    p.add_argument("--half", action="store_true", help="float16 on CUDA")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="images per forward pass (default: 1 on a CPU, where batching only "
                        f"pads, {DEFAULT_BATCH_SIZE} on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: $DISTILL_TORCH_THREADS, else half the cores, "
                        "so that two processes on one machine do not thrash)")
    p.add_argument("--keypoint-cap", type=_cap, default=d["keypoint_cap"],
                   help="keypoint teachers: detections per image that get the keypoint "
                        "ensemble: 'auto' (4x the labeled instances per image, at least 10), "
                        "a number, or 0 for all")
    p.add_argument("--keypoint-floor", type=float, default=d["keypoint_floor"],
                   help="keypoint teachers, calibrated selection: skip the keypoint ensemble "
                        "for detections scoring below this fraction of the running estimate "
                        "of the calibrated threshold (default 0.5; 0: off)")


def parse_arch_options(items: list[str]) -> dict[str, Any]:
    """``--arch-option`` values: ``["box_score_thresh=0.01", "x=abc"]`` ->
    ``{"box_score_thresh": 0.01, "x": "abc"}`` (values parsed as JSON when they are)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arch-option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as a name
    return out


def inference_options_from_args(args: argparse.Namespace) -> InferenceOptions:
    """The :class:`InferenceOptions` that :func:`add_inference_arguments` flags describe."""
    return inference_options_from(vars(args))


def _cap(value: str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {value!r}") \
            from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distill`` console script."""
    args = build_parser().parse_args(argv)
    # Read here rather than through jobs.settings (whose Settings.log_format validates the
    # same variable): the core imports nothing above it, and every subcommand logs alike.
    fmt = os.environ.get("DISTILL_LOG_FORMAT", "").strip().lower() or "text"
    try:
        configure_logging(fmt, logging.DEBUG if args.verbose else logging.INFO)
    except ConfigError as exc:
        print(f"distill: error: DISTILL_LOG_FORMAT: {exc}", file=sys.stderr)
        return 2
    if not args.verbose:
        # One line per HTTP request would drown the client's progress bar.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except DistillError as exc:
        print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in _ENGINE_PACKAGES:
            raise
        # An install without the engine (say the API's): this command runs a model.
        print(f"distill {args.command}: error: this command needs {exc.name}, which this "
              "installation lacks; install the worker or training extra: "
              "pip install 'distill[worker]' or 'distill[training]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

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

from distill.cli_args import (
    add_inference_arguments,
    add_selection_arguments,
    inference_options_from_args,
)
from distill.errors import ConfigError, DistillError
from distill.logs import configure_logging
from distill.options import (
    DEFAULT_SYNTH_FAMILY,
    SYNTH_FAMILIES,
)

# Modules that add subcommands through a `register(subparsers)` function; each imports its
# heavy dependencies inside its commands, so that `distill serve` runs without torch.
_PLUGINS = ("distill.teachers.cli", "distill.export_cli", "distill.imports.cli", "training.cli",
            "service.cli", "worker.cli")
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

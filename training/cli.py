"""``distill train``, ``distill eval``, ``distill loop``, ``distill experiment`` and
``distill sweep``.

``distill.cli`` calls :func:`register` to add them; each handler maps the flags
onto the matching function's explicit arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.fileio import write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the training subcommands to the ``distill`` parser."""
    _add_train(subparsers.add_parser(
        "train", help="train a teacher (labeled) or student (labeled + pseudo-labeled)",
        description="Train a detector on a COCO data set, optionally mixed with pseudo-labels."))
    _add_eval(subparsers.add_parser(
        "eval", help="COCO AP of a checkpoint (optionally with test-time augmentation)"))
    from training.loop_config import add_arguments as add_loop_arguments

    p = subparsers.add_parser(
        "loop", help="your labeled COCO set + unlabeled images -> teacher, pseudo-labels, "
                     "student(s), equal-budget baseline, held-out report (resumable); "
                     "--preflight: will a student pay? on the labeled set alone",
        description="teacher (or --teacher) -> pseudo-labels (locally or --url) -> student "
                    "(--rounds N) vs. an equal-budget baseline on a held-out split; every "
                    "step's output stays in --out, so the same command resumes. With "
                    "--preflight S, no unlabeled folder: a share S of the labeled images "
                    "plays it, their labels hidden, and the report adds an oracle taught "
                    "them and the pseudo-labels' precision and recall against them")
    add_loop_arguments(p)
    p.set_defaults(func=_cmd_loop)
    from training.experiment_config import add_arguments

    p = subparsers.add_parser(
        "experiment", help="the data-distillation experiment on synthetic data",
        description="teacher -> pseudo-labels -> student vs. an equal-budget baseline")
    add_arguments(p)
    p.set_defaults(func=_cmd_experiment)
    from training.sweep_cli import add_sweep_arguments

    p = subparsers.add_parser(
        "sweep", help="baselines, students and oracles over labeled sizes and budgets "
                      "(when does it pay?), one committed file per point",
        description="runs the points with no file in --points-dir, one at a time, each "
                    "written as it finishes; SWEEP.md is generated from the files alone")
    add_sweep_arguments(p)
    p.set_defaults(func=_cmd_sweep)


def _cmd_loop(args: argparse.Namespace) -> int:
    from training.loop import run_from_args

    return run_from_args(args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from training.sweep_cli import run_sweep_from_args

    return run_sweep_from_args(args)


def _add_train(p: argparse.ArgumentParser) -> None:
    from training.config_flags import add_arguments
    from training.train_config import TrainConfig

    add_arguments(p, TrainConfig)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.threads import apply_thread_budget
    from training.config_flags import from_namespace
    from training.trainer import TrainConfig, train

    cfg = from_namespace(TrainConfig, args)
    # Rebuilt from the settings rather than taken from sys.argv, which is another
    # program's when distill.cli.main is called with an explicit argument list.
    cfg.command = cfg.to_command()
    apply_thread_budget(cfg.threads)
    result = train(cfg)
    print(f"{result.checkpoint}: {result.iterations} iterations "
          f"({result.iterations - result.start_iteration} this run, {result.seconds:.0f} s)")
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    from distill.cli_args import add_inference_arguments

    p.add_argument("--model", type=Path, required=True, help="checkpoint with a card")
    p.add_argument("--json", type=Path, required=True, help="ground-truth COCO file")
    p.add_argument("--images", type=Path, required=True, help="folder of its images")
    p.add_argument("--out", type=Path, help="write the scores here as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_inference_arguments(p)
    # Plain single-pass inference unless --tta names a preset.
    p.set_defaults(tta=None, func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from distill.threads import apply_thread_budget

    apply_thread_budget(args.threads)
    from distill.cli_args import inference_options_from_args
    from training.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(args.model, args.json, args.images, tta=args.tta,
                                 options=inference_options_from_args(args),
                                 device=args.device, batch_size=args.batch_size,
                                 progress=not args.quiet)
    for iou_type, table in report.tables.items():
        print(f"{iou_type} ({args.model.name}, tta={args.tta or 'none'}):")
        print(table.rstrip())
    if args.out is not None:
        write_json_atomic(args.out, report.to_json())
        print(f"wrote {args.out}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from training.experiment import run_from_args

    return run_from_args(args)

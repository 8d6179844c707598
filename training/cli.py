"""``distill train``, ``distill eval`` and ``distill experiment``.

``distill.cli`` calls :func:`register` to add them; each handler maps the flags
onto the matching function's explicit arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.fileio import write_json_atomic
from distill.options import ARCHITECTURES, TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the training subcommands to the ``distill`` parser."""
    _add_train(subparsers.add_parser(
        "train", help="train a teacher (labeled) or student (labeled + pseudo-labeled)",
        description="Train a detector on a COCO data set, optionally mixed with pseudo-labels."))
    _add_eval(subparsers.add_parser(
        "eval", help="COCO AP of a checkpoint (optionally with test-time augmentation)"))
    from training.experiment_config import add_arguments

    p = subparsers.add_parser(
        "experiment", help="the data-distillation experiment on synthetic data",
        description="teacher -> pseudo-labels -> student vs. an equal-budget baseline")
    add_arguments(p)
    p.set_defaults(func=_cmd_experiment)
    from training.sweep import add_sweep_arguments

    p = subparsers.add_parser(
        "sweep", help="baselines, students and oracles over labeled sizes and budgets "
                      "(when does it pay?), one committed file per point",
        description="runs the points with no file in --points-dir, one at a time, each "
                    "written as it finishes; SWEEP.md is generated from the files alone")
    add_sweep_arguments(p)
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from training.sweep import run_sweep_from_args

    return run_sweep_from_args(args)


def _add_train(p: argparse.ArgumentParser) -> None:
    from training.defaults import DEFAULT_BATCH, DEFAULT_ITERS, DEFAULT_LR

    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--train-json", type=Path, required=True, help="labeled COCO file")
    p.add_argument("--images", type=Path, required=True, help="folder of the labeled images")
    p.add_argument("--pseudo-json", type=Path, help="COCO pseudo-labels (distill annotate)")
    p.add_argument("--pseudo-images", type=Path, help="folder of the pseudo-labeled images")
    p.add_argument("--labeled-ratio", type=float, default=0.6,
                   help="probability that a minibatch image is a labeled one (default 0.6)")
    p.add_argument("--arch", choices=ARCHITECTURES, default="tiny")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: $DISTILL_TORCH_THREADS, else "
                        "half the cores, so that a worker or a second training fits beside)")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help="images per iteration over all processes")
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, help="default: 10%% of --iters, at most 200")
    p.add_argument("--steps", type=float, nargs="+", default=[0.7, 0.9],
                   help="fractions of --iters where the rate drops by 10x")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--init", default="scratch",
                   help="'scratch' (initial weights, the method's default) or a checkpoint")
    p.add_argument("--crowd", choices=("ignore", "drop"), default="ignore",
                   help="iscrowd annotations (COCO crowds, pseudo-label ignore regions): "
                        "neither object nor background (default), or dropped")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out stem>.last.pt when it exists")
    p.add_argument("--stop-at", type=int, help="leave after this iteration (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, help="test-time shorter side (arch default)")
    p.add_argument("--max-size", type=int, help="longer-side cap (arch default)")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=[0.75, 1.25],
                   metavar=("LOW", "HIGH"), help="training sizes as factors of --min-size")
    p.add_argument("--flip-prob", type=float, default=0.5)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--workers", type=int, default=0, help="data-loader processes")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--backbone-weights", type=Path, help="local pretrained backbone file")
    p.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                   help="detector constructor option, VALUE as JSON (repeatable)")
    p.add_argument("--max-grad-norm", type=float, help="clip gradients to this norm")
    p.add_argument("--sync-bn", action="store_true",
                   help="synchronise BatchNorm statistics across GPUs (torchrun on CUDA)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard events next to the checkpoint (default: if installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _equivalent_command(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces ``args`` (every option spelled out), for the card.

    Rebuilt from the parsed options rather than ``sys.argv``, which is another
    program's when ``distill.cli.main`` is called with an explicit argument list.
    """
    cmd = ["distill", str(args.command)]
    for key, value in vars(args).items():
        if key in ("command", "func", "verbose") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif isinstance(value, list):
            if key == "arch_option":
                for item in value:
                    cmd += [flag, str(item)]
            elif value:
                cmd += [flag, *(str(v) for v in value)]
        else:
            cmd += [flag, str(value)]
    return cmd


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.cli import parse_arch_options
    from distill.threads import apply_thread_budget
    from training.trainer import TrainConfig, train

    apply_thread_budget(args.threads)
    cfg = TrainConfig(
        task=args.task, train_json=args.train_json, images=args.images, out=args.out,
        arch=args.arch, pseudo_json=args.pseudo_json, pseudo_images=args.pseudo_images,
        labeled_ratio=args.labeled_ratio, iters=args.iters, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters, steps=tuple(args.steps), init=args.init,
        crowd=args.crowd,
        resume=args.resume, stop_at=args.stop_at, seed=args.seed, min_size=args.min_size,
        max_size=args.max_size, scale_jitter=(args.scale_jitter[0], args.scale_jitter[1]),
        flip_prob=args.flip_prob, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, num_workers=args.workers, device=args.device,
        arch_options=parse_arch_options(args.arch_option), backbone_weights=args.backbone_weights,
        max_grad_norm=args.max_grad_norm, sync_bn=args.sync_bn, tensorboard=args.tensorboard,
        progress=not args.quiet, command=_equivalent_command(args))
    result = train(cfg)
    print(f"{result.checkpoint}: {result.iterations} iterations "
          f"({result.iterations - result.start_iteration} this run, {result.seconds:.0f} s)")
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    from distill.cli import add_inference_arguments

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
    from distill.cli import inference_options_from_args
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

"""``distill sweep``'s flags and entry point (the sweep itself: :mod:`training.sweep`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.errors import ConfigError
from training.experiment_config import add_arguments, config_from_args
from training.sweep import DEFAULT_POINTS_DIR, run_sweep
from training.sweep_points import Axes, chosen, pending


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``distill sweep``: the experiment's size and schedule flags plus the sweep's axes."""
    add_arguments(p)
    p.set_defaults(out_dir=Path("runs/sweep"), tasks=["boxes", "keypoints"], seeds=[0, 1],
                   jobs=1, ignore_factor=2.0)
    p.add_argument("--families", nargs="+", default=None,
                   help="synthetic families in order (default: --family)")
    p.add_argument("--labeled-sizes", type=int, nargs="+", default=[150, 40],
                   help="labeled-set sizes, in the order to run them")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4],
                   help="baseline budgets, multiples of --student-iters")
    p.add_argument("--student-budgets", type=int, nargs="*", default=[2, 4],
                   help="(none: no such points; with --oracle-budgets and --lever-budgets "
                        "these select what a run takes on)")
    p.add_argument("--oracle-budgets", type=int, nargs="*", default=[4])
    p.add_argument("--lever-budgets", type=int, nargs="*", default=[2],
                   help="budgets of the student-ignore (its F: --ignore-factor, default 2 "
                        "here) and student-round2 points (none: no such points)")
    p.add_argument("--points-dir", type=Path, default=DEFAULT_POINTS_DIR,
                   help="one JSON file per finished point (commit them)")
    p.add_argument("--report", type=Path, default=None,
                   help="the summary (default: SWEEP.md beside the points folder)")
    p.add_argument("--max-points", type=int, default=None, help="stop after this many points")
    p.add_argument("--points", nargs="+", default=None, metavar="NAME",
                   help="only these pending points (names as --plan lists them), in plan "
                        "order: say, a lever while its student's checkpoint is still there")
    p.add_argument("--plan", action="store_true", help="list the pending points and stop")
    p.add_argument("--report-only", action="store_true",
                   help="regenerate the summary from the committed points and stop")


def run_sweep_from_args(args: argparse.Namespace) -> int:
    """``distill sweep``."""
    from training.sweep_report import write_report

    base = config_from_args(args)
    if base.jobs != 1:
        raise ConfigError("the sweep runs one point at a time (--jobs 1); give a point "
                          "more --threads instead")
    if base.student_init != "scratch":
        raise ConfigError("the sweep's students start from scratch, as the paper's; "
                          "--student-init teacher is a lever of `distill experiment`")
    axes = Axes(families=tuple(args.families or [base.family]),
                labeled_sizes=tuple(args.labeled_sizes), tasks=base.tasks, seeds=base.seeds,
                baseline_budgets=tuple(args.budgets),
                student_budgets=tuple(args.student_budgets),
                oracle_budgets=tuple(args.oracle_budgets),
                lever_budgets=tuple(args.lever_budgets))
    report = args.report or args.points_dir.parent / "SWEEP.md"
    if args.report_only:
        write_report(args.points_dir, report, axes)
        print(report.read_text(encoding="utf-8"))
        return 0
    if args.plan:
        todo = chosen(pending(axes, args.points_dir), args.points)
        print("\n".join(p.name for p in todo) or "nothing left")
        print(f"{len(todo)} point(s) pending")
        return 0
    run_sweep(base, axes, args.points_dir, report, args.max_points, args.points)
    return 0

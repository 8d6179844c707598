"""When does the student pay? Baselines, students and oracles over labeled sizes and budgets.

``distill sweep`` runs the points of :mod:`training.sweep_points` that have no file yet
in ``--points-dir`` (``docs/sweep/points``, committed), one at a time, in the order that
answers the question first, writes each finished point's file and regenerates
``SWEEP.md`` from the files alone (:mod:`training.sweep_report`). Stop it at any time:
a point is all or nothing, and the next run (on any machine, a GPU one included)
continues with the first point that has no file. Checkpoints, data and pseudo-labels
live in ``--out-dir`` (one folder per family and labeled size, the experiment's layout)
and are regenerated where they are gone.

A point's model: ``baseline`` trains on the labeled split only for budget x
``--student-iters`` iterations; ``student`` is taught the pseudo-labels (the product's
defaults: the ``--tta`` preset, raw box pooling, calibrated selection) of the best
baseline of its seed over every baseline budget (the teacher a user would train:
until its test AP stops rising), from scratch, on the student budget; ``oracle`` is
the same student taught the unlabeled split's true labels, the ceiling of what
pseudo-labels could give.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from training.experiment_config import ExperimentConfig, add_arguments, config_from_args
from training.sweep_points import (
    Axes,
    Point,
    check_settings,
    load_points,
    pending,
    write_point,
)

DEFAULT_POINTS_DIR = Path("docs/sweep/points")


def sweep_settings(base: ExperimentConfig) -> dict[str, Any]:
    """The result-changing settings every point records (and must share)."""
    return {"unlabeled": base.unlabeled, "test": base.test, "base_iters": base.student_iters,
            "batch_size": base.batch_size, "lr": base.lr,
            "labeled_ratio": base.labeled_ratio, "tta": base.tta, "arch": base.arch,
            "min_size": base.min_size, "max_size": base.max_size}


def point_config(base: ExperimentConfig, point: Point) -> ExperimentConfig:
    """The experiment settings of one point's run folder (shared by every point of its
    family and labeled size: the same data and baselines)."""
    return replace(base, out_dir=base.out_dir / f"{point.family}-labeled{point.labeled}",
                   family=point.family, labeled=point.labeled, shifted=0, oracle=False,
                   teacher_iters=base.student_iters, seeds=(point.seed,),
                   tasks=(point.task,), rounds=1, compare_pooling=False, ignore_factor=0.0,
                   jobs=1, results_md=None)


def run_sweep(base: ExperimentConfig, axes: Axes, points_dir: Path = DEFAULT_POINTS_DIR,
              report: Path | None = None, max_points: int | None = None) -> list[Path]:
    """Runs the pending points (at most ``max_points``), each written as it finishes,
    and regenerates the report after each; returns the files written."""
    from training.sweep_report import write_report

    settings = sweep_settings(base)
    check_settings(load_points(points_dir), settings)
    report = report or points_dir.parent / "SWEEP.md"
    todo = pending(axes, points_dir)
    if max_points is not None:
        todo = todo[:max_points]
    print(f"sweep: {len(todo)} point(s) to run, {len(pending(axes, points_dir)) - len(todo)} "
          f"left after them; points in {points_dir}", flush=True)
    written = []
    for point in todo:
        print(f"sweep: {point.name} ...", flush=True)
        record = run_point(base, point, axes, load_points(points_dir))
        written.append(write_point(points_dir, point, {**record, "settings": settings}))
        write_report(points_dir, report, axes)
        print(f"sweep: {point.name}: AP {record['ap']['single']:.1f} "
              f"(TTA {record['ap']['tta']:.1f}), {record['wall_s']:.0f} s", flush=True)
    write_report(points_dir, report, axes)
    return written


def run_point(base: ExperimentConfig, point: Point, axes: Axes,
              records: list[dict[str, Any]]) -> dict[str, Any]:
    """Trains and evaluates one point's model; returns its record (without the point)."""
    import torch

    from distill.options import FusionParams
    from training.experiment import _claim_out_dir, _data, machine
    from training.pipeline import Pipeline
    from training.report import METRIC
    from training.sweep_points import best_baseline

    cfg = point_config(base, point)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _claim_out_dir(cfg)
    torch.set_num_threads(cfg.threads)
    data = _data(cfg, point.seed)
    p = Pipeline(cfg, point.task, point.seed, data)
    iters = cfg.student_iters * point.budget
    steps: list[str] = []
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    unlabeled = data["unlabeled"].images_dir
    if point.role == "baseline":
        name = f"baseline-x{point.budget}"
        model = p.train(name, iters)
    elif point.role == "oracle":
        name = f"oracle-x{point.budget}"
        model = p.train(name, iters, p.json_of("unlabeled"), unlabeled)
    else:
        best = best_baseline(records, point.family, point.task, point.labeled, point.seed,
                             axes.baseline_budgets)
        if best is None:
            raise ConfigError(f"{point.name} needs the baselines at every budget "
                              f"{list(axes.baseline_budgets)} first")
        tb, teacher_ap = best
        teacher_name, pseudo_name = f"baseline-x{tb}", f"pseudo-x{tb}"
        # Regenerated (same seed and command) when the checkpoint is gone.
        teacher = p.train(teacher_name, cfg.student_iters * tb)
        pseudo = p.annotate(pseudo_name, teacher, "unlabeled",
                            pooling=FusionParams().pooled)
        name = f"student-x{point.budget}-teacher-x{tb}"
        model = p.train(name, iters, pseudo, unlabeled)
        steps += [f"train {teacher_name}", f"annotate {pseudo_name}"]
        extra = {"teacher": {"budget": tb, "iters": cfg.student_iters * tb,
                             "ap_single": teacher_ap},
                 "pseudo": p.pseudo_summary(pseudo_name, "unlabeled", teacher)}
    scores = {"single": p.evaluate(name, model, None), "tta": p.evaluate(name, model, cfg.tta)}
    steps += [f"train {name}", f"eval {name}", f"eval {name}+tta"]
    metric = METRIC[point.task]
    times = {s: p.times[s] for s in steps if s in p.times}
    return {"iters": iters,
            "ap": {k: round(float(v[metric]["AP"]), 2) for k, v in scores.items()},
            "scores": scores, **extra, "times": times,
            "wall_s": round(sum(times.values()), 1),
            "this_run_s": round(time.perf_counter() - t0, 1),
            "machine": {**machine(cfg), "device": cfg.device}, "commit": _commit(),
            "commands": p.commands, "sweep_command": base.command,
            "finished": datetime.now(UTC).isoformat(timespec="seconds")}


def _commit() -> str:
    """The code's commit (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``distill sweep``: the experiment's size and schedule flags plus the sweep's axes."""
    add_arguments(p)
    p.set_defaults(out_dir=Path("runs/sweep"), tasks=["boxes", "keypoints"], seeds=[0, 1],
                   jobs=1)
    p.add_argument("--families", nargs="+", default=None,
                   help="synthetic families in order (default: --family)")
    p.add_argument("--labeled-sizes", type=int, nargs="+", default=[150, 40],
                   help="labeled-set sizes, in the order to run them")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4],
                   help="baseline budgets, multiples of --student-iters")
    p.add_argument("--student-budgets", type=int, nargs="+", default=[2, 4])
    p.add_argument("--oracle-budgets", type=int, nargs="+", default=[4])
    p.add_argument("--points-dir", type=Path, default=DEFAULT_POINTS_DIR,
                   help="one JSON file per finished point (commit them)")
    p.add_argument("--report", type=Path, default=None,
                   help="the summary (default: SWEEP.md beside the points folder)")
    p.add_argument("--max-points", type=int, default=None, help="stop after this many points")
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
    axes = Axes(families=tuple(args.families or [base.family]),
                labeled_sizes=tuple(args.labeled_sizes), tasks=base.tasks, seeds=base.seeds,
                baseline_budgets=tuple(args.budgets),
                student_budgets=tuple(args.student_budgets),
                oracle_budgets=tuple(args.oracle_budgets))
    report = args.report or args.points_dir.parent / "SWEEP.md"
    if args.report_only:
        write_report(args.points_dir, report, axes)
        print(report.read_text(encoding="utf-8"))
        return 0
    if args.plan:
        todo = pending(axes, args.points_dir)
        print("\n".join(p.name for p in todo) or "nothing left")
        print(f"{len(todo)} point(s) pending")
        return 0
    run_sweep(base, axes, args.points_dir, report, args.max_points)
    return 0

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
pseudo-labels could give. The levers (``student-ignore``, ``student-round2``) are
that student with one change each, named in :func:`_taught`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import ConfigError
from training.experiment_config import ExperimentConfig
from training.report import METRIC
from training.sweep_points import (
    LEVERS,
    Axes,
    Point,
    best_baseline,
    check_settings,
    chosen,
    load_points,
    pending,
    point_of,
    record_of,
    write_point,
)

if TYPE_CHECKING:
    from training.pipeline import Pipeline

DEFAULT_POINTS_DIR = Path("docs/sweep/points")


def sweep_settings(base: ExperimentConfig) -> dict[str, Any]:
    """The result-changing settings every point records (and must share)."""
    return {"unlabeled": base.unlabeled, "test": base.test, "base_iters": base.student_iters,
            "batch_size": base.batch_size, "lr": base.lr,
            "labeled_ratio": base.labeled_ratio, "tta": base.tta, "arch": base.arch,
            "min_size": base.min_size, "max_size": base.max_size, "precision": base.precision}


def point_config(base: ExperimentConfig, point: Point) -> ExperimentConfig:
    """The experiment settings of one point's run folder (shared by every point of its
    family and labeled size: the same data and baselines)."""
    return replace(base, out_dir=base.out_dir / f"{point.family}-labeled{point.labeled}",
                   family=point.family, labeled=point.labeled, shifted=0, oracle=False,
                   student_init="scratch",
                   teacher_iters=base.student_iters, seeds=(point.seed,),
                   tasks=(point.task,), rounds=1, compare_pooling=False, ignore_factor=0.0,
                   jobs=1, results_md=None)


def run_sweep(base: ExperimentConfig, axes: Axes, points_dir: Path = DEFAULT_POINTS_DIR,
              report: Path | None = None, max_points: int | None = None,
              only: Sequence[str] | None = None) -> list[Path]:
    """Runs the pending points (only those named in ``only``, if given; at most
    ``max_points``), each written as it finishes, and regenerates the report after
    each; returns the files written."""
    from training.pipeline import sigterm_exits
    from training.sweep_report import write_report

    settings = sweep_settings(base)
    committed = load_points(points_dir)
    check_settings(committed, settings)
    if axes.lever_budgets:
        check_ignore_factor(committed, base.ignore_factor)
    report = report or points_dir.parent / "SWEEP.md"
    todo = chosen(pending(axes, points_dir), only)
    if max_points is not None:
        todo = todo[:max_points]
    print(f"sweep: {len(todo)} point(s) to run, {len(pending(axes, points_dir)) - len(todo)} "
          f"left after them; points in {points_dir}", flush=True)
    written = []
    for point in todo:
        print(f"sweep: {point.name} ...", flush=True)
        with sigterm_exits():  # a stopped point's steps keep the time they ran
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

    from training.experiment import _claim_out_dir, _data, machine
    from training.pipeline import Pipeline

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
    if point.role == "baseline":
        name = f"baseline-x{point.budget}"
        model = p.train(name, iters)
    elif point.role == "oracle":
        name = f"oracle-x{point.budget}"
        model = p.train(name, iters, p.json_of("unlabeled"), data["unlabeled"].images_dir)
    else:
        name, model, steps, extra = _taught(p, base, point, axes, records)
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


def _taught(p: Pipeline, base: ExperimentConfig, point: Point, axes: Axes,
            records: list[dict[str, Any]]) -> tuple[str, Path, list[str], dict[str, Any]]:
    """A point taught pseudo-labels: its model's name and checkpoint, the steps before
    its training, and its record's teacher and pseudo-label entries.

    Every one starts from a teacher (:func:`teacher_of`: the best baseline of its seed,
    for a lever its student's) and its pseudo-labels (the product's defaults).
    ``student`` learns from them; ``student-ignore`` from the same teacher's
    pseudo-labels with its unsure predictions as ignore regions (``--ignore-factor``,
    F = 2 by default: Run 5's choice); ``student-round2`` from the pseudo-labels of the
    round-1 ``student`` of the same budget (trained here too when its checkpoint is
    gone).
    """
    from distill.options import FusionParams

    tb, teacher_ap = teacher_of(records, point, axes)
    iters, pooling = p.cfg.student_iters * point.budget, FusionParams().pooled
    unlabeled = p.data["unlabeled"].images_dir
    # Regenerated (same seed and command) when the checkpoint is gone.
    labeler = teacher = p.train(f"baseline-x{tb}", p.cfg.student_iters * tb)
    pseudo_name = f"pseudo-x{tb}"
    pseudo = p.annotate(pseudo_name, teacher, "unlabeled", pooling=pooling)
    steps = [f"train baseline-x{tb}", f"annotate {pseudo_name}"]
    labeler_info: dict[str, Any] = {"budget": tb, "iters": p.cfg.student_iters * tb,
                                    "ap_single": teacher_ap}
    extra: dict[str, Any] = {}
    student = f"student-x{point.budget}-teacher-x{tb}"
    if point.role == "student-ignore":
        factor = base.ignore_factor
        plain, pseudo_name = pseudo, f"pseudo-x{tb}-ignore{factor:g}"
        # A box teacher's log holds every detection and is lent; a keypoint teacher's
        # was cut by the score floor, which ignore regions reach below.
        pseudo = p.annotate(pseudo_name, teacher, "unlabeled", pooling=pooling,
                            ignore_factor=factor,
                            predictions_of=plain if point.task == "boxes" else None)
        steps.append(f"annotate {pseudo_name}")
        name, extra = f"student-ignore{factor:g}-x{point.budget}-teacher-x{tb}", {
            "ignore_factor": factor}
    elif point.role == "student-round2":
        labeler = p.train(student, iters, pseudo, unlabeled)
        pseudo_name = f"pseudo-round2-{student}"
        pseudo = p.annotate(pseudo_name, labeler, "unlabeled", pooling=pooling)
        # The labeler's own AP: a round-1 student retrained here (its checkpoint gone)
        # may differ from the committed point's by float rounding.
        ap = p.evaluate(student, labeler, None)[METRIC[point.task]]["AP"]
        committed = record_of(records, replace(point, role="student"))
        steps += [f"train {student}", f"annotate {pseudo_name}", f"eval {student}"]
        labeler_info = {"round1": student, "budget": point.budget, "iters": iters,
                        "ap_single": round(float(ap), 2),
                        "committed_ap_single": committed and committed["ap"]["single"],
                        "teacher": labeler_info}
        name = f"student-round2-x{point.budget}-teacher-x{tb}"
    else:
        name = student
    model = p.train(name, iters, pseudo, unlabeled)
    return name, model, steps, {"teacher": labeler_info, **extra,
                                "pseudo": p.pseudo_summary(pseudo_name, "unlabeled", labeler)}


def teacher_of(records: list[dict[str, Any]], point: Point, axes: Axes) -> tuple[int, float]:
    """The budget and AP of the teacher of a point taught pseudo-labels: the best baseline
    of its seed; a lever takes the teacher of the committed student of its budget, so
    the two stay comparable should the best baseline have changed since (budgets added,
    a baseline rerun)."""
    best = best_baseline(records, point.family, point.task, point.labeled, point.seed,
                         axes.baseline_budgets)
    if best is None:
        raise ConfigError(f"{point.name} needs the baselines at every budget "
                          f"{list(axes.baseline_budgets)} first")
    student = record_of(records, replace(point, role="student"))
    if point.role in LEVERS and student is not None:
        taught = student["teacher"]
        if int(taught["budget"]) != best[0]:
            print(f"sweep: {point.name}: the teacher of its committed student, x"
                  f"{taught['budget']}, not the best baseline now, x{best[0]}", flush=True)
        return int(taught["budget"]), float(taught["ap_single"])
    return best


def check_ignore_factor(records: list[dict[str, Any]], factor: float) -> None:
    """Refuses an ignore factor other than the committed ``student-ignore`` points' (F is
    not part of a point's name) or none at all."""
    if factor <= 0:
        raise ConfigError("the student-ignore points need --ignore-factor > 0 (default 2); "
                          "--lever-budgets with no value runs none")
    for record in records:
        theirs = record.get("ignore_factor")
        if point_of(record).role == "student-ignore" and theirs != factor:
            raise ConfigError(f"the points folder holds {point_of(record).name} made with "
                              f"--ignore-factor {theirs}, not {factor}; use another "
                              "--points-dir or the same factor")


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

"""The sweep's unit of work: one trained model, one small JSON file in the repository.

A sweep point is (family, task, labeled-set size, seed, role, budget multiple), where
the role is ``baseline`` (labeled images only), ``student`` (labeled + pseudo-labels of
the best baseline of its seed), ``oracle`` (labeled + the unlabeled split's true
labels), or one of the two levers measured on the students of every task:
``student-ignore`` (the student's pseudo-labels with the teacher's unsure predictions
as ignore regions) and ``student-round2`` (a second round: the round-1 student of the
same budget labels the unlabeled split again, a new student learns from that).

Each finished point writes ``<points dir>/<name>.json`` atomically: the test scores
single pass and with TTA, for students the teacher and the pseudo-labels'
precision and recall, iterations, wall time, machine, commit and the exact commands.

The points are committed (``docs/sweep/points``), so a sweep continues on any machine
where it last stopped: :func:`plan` lists the points in the order that answers the
question first and leaves out the ones whose file exists. Checkpoints and pseudo-labels
are intermediate and may be regenerated (a student whose teacher checkpoint is gone
retrains that baseline first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from distill.errors import ConfigError
from distill.fileio import write_json_atomic
from distill.options import DEFAULT_SYNTH_FAMILY, Task

Role = Literal["baseline", "student", "oracle", "student-ignore", "student-round2"]
ROLES: tuple[Role, ...] = ("baseline", "student", "oracle", "student-ignore",
                           "student-round2")
LEVERS: tuple[Role, ...] = ("student-ignore", "student-round2")

# Settings that change a point's numbers: points written with others are not comparable,
# so a points folder holds one combination (the sweep refuses to mix).
RESULT_SETTINGS = ("unlabeled", "test", "base_iters", "batch_size", "lr", "labeled_ratio",
                   "tta", "arch", "min_size", "max_size", "precision")
# A setting's value in the points written before it was recorded.
SETTINGS_BEFORE = {"precision": "fp32"}


@dataclass(frozen=True, order=True)
class Point:
    """One sweep point; ``name`` is its file's stem."""

    family: str
    task: Task
    labeled: int
    seed: int
    role: Role
    budget: int

    @property
    def name(self) -> str:
        return (f"{self.family}-{self.task}-labeled{self.labeled}-seed{self.seed}-"
                f"{self.role}-x{self.budget}")

    def file(self, points_dir: Path) -> Path:
        return points_dir / f"{self.name}.json"


@dataclass(frozen=True)
class Axes:
    """What a sweep covers. Budgets are multiples of the settings' ``base_iters``;
    ``lever_budgets`` are those of the :data:`LEVERS` points."""

    families: tuple[str, ...] = (DEFAULT_SYNTH_FAMILY,)
    labeled_sizes: tuple[int, ...] = (150, 40)
    tasks: tuple[Task, ...] = ("boxes", "keypoints")
    seeds: tuple[int, ...] = (0, 1)
    baseline_budgets: tuple[int, ...] = (1, 2, 4)
    student_budgets: tuple[int, ...] = (2, 4)
    oracle_budgets: tuple[int, ...] = (4,)
    lever_budgets: tuple[int, ...] = (2,)


def plan(axes: Axes) -> list[Point]:
    """Every point, in the order that answers the question first: family and labeled
    size as given; within them, per task and seed, the baselines (smallest budget first:
    the students need all of them to pick their teacher), the students, the oracle; then
    the levers of every task and seed (they refine an answer the students gave)."""
    main: tuple[tuple[Role, tuple[int, ...]], ...] = (
        ("baseline", axes.baseline_budgets), ("student", axes.student_budgets),
        ("oracle", axes.oracle_budgets))
    levers = tuple((role, axes.lever_budgets) for role in LEVERS)
    points = []
    for family in axes.families:
        for labeled in axes.labeled_sizes:
            for roles in (main, levers):
                for task in axes.tasks:
                    for seed in axes.seeds:
                        points += [Point(family, task, labeled, seed, role, b)
                                   for role, budgets in roles for b in sorted(budgets)]
    return points


def load_points(points_dir: Path) -> list[dict[str, Any]]:
    """Every committed point file of ``points_dir`` (sorted by name)."""
    if not points_dir.is_dir():
        return []
    return [json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(points_dir.glob("*.json"))]


def point_of(record: dict[str, Any]) -> Point:
    """The :class:`Point` a point file describes."""
    return Point(**record["point"])


def check_settings(records: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Refuses to add points made with other result-changing settings to a folder."""
    settings = {**SETTINGS_BEFORE, **settings}
    for record in records:
        theirs = {**SETTINGS_BEFORE, **record["settings"]}
        diff = {k: (theirs.get(k), settings.get(k)) for k in RESULT_SETTINGS
                if theirs.get(k) != settings.get(k)}
        if diff:
            changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
            raise ConfigError(f"the points folder holds {point_of(record).name} made with "
                              f"other settings ({changes}); use another --points-dir")


def pending(axes: Axes, points_dir: Path) -> list[Point]:
    """The planned points whose file is not there yet, in plan order."""
    return [p for p in plan(axes) if not p.file(points_dir).is_file()]


def chosen(todo: list[Point], names: Sequence[str] | None) -> list[Point]:
    """The points of ``todo`` named in ``names`` (all of them when None), in plan order;
    a name that is no pending point is an error that lists the pending ones."""
    if names is None:
        return todo
    unknown = set(names) - {p.name for p in todo}
    if unknown:
        raise ConfigError(f"not pending: {', '.join(sorted(unknown))} (pending: "
                          f"{', '.join(p.name for p in todo) or 'none'}; `distill sweep "
                          "--plan` lists them)")
    wanted = set(names)
    return [p for p in todo if p.name in wanted]


def best_baseline(records: list[dict[str, Any]], family: str, task: Task, labeled: int,
                  seed: int, budgets: tuple[int, ...], inference: str = "single"
                  ) -> tuple[int, float] | None:
    """The budget whose baseline scored highest at (family, task, labeled, seed) and its
    AP (``inference``: ``single`` or ``tta``), or None while any of ``budgets`` has no
    baseline point yet: the teacher of a student is the best of all of them."""
    found: dict[int, float] = {}
    for record in records:
        p = point_of(record)
        if (p.role, p.family, p.task, p.labeled, p.seed) == ("baseline", family, task,
                                                             labeled, seed):
            found[p.budget] = float(record["ap"][inference])
    if not budgets or any(b not in found for b in budgets):
        return None
    budget = max(budgets, key=lambda b: (found[b], -b))  # ties: the cheaper training
    return budget, found[budget]


def record_of(records: list[dict[str, Any]], point: Point) -> dict[str, Any] | None:
    """The committed record of ``point`` (None when it has no file yet)."""
    return next((r for r in records if point_of(r) == point), None)


def write_point(points_dir: Path, point: Point, record: dict[str, Any]) -> Path:
    """Writes the point's file atomically (a point is all or nothing)."""
    path = point.file(points_dir)
    write_json_atomic(path, {"point": asdict(point), **record})
    return path

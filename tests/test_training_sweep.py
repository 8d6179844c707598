"""The sweep's points and summary on hand-built point files; one quick sweep end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.errors import ConfigError
from training.sweep_points import (
    Axes,
    Point,
    best_baseline,
    check_settings,
    chosen,
    load_points,
    pending,
    plan,
    write_point,
)
from training.sweep_report import render

SETTINGS = {"unlabeled": 500, "test": 150, "base_iters": 1000, "batch_size": 4, "lr": 0.02,
            "labeled_ratio": 0.6, "tta": "standard", "arch": "tiny", "min_size": None,
            "max_size": None}
AXES = Axes(labeled_sizes=(150, 40), tasks=("boxes",), seeds=(0, 1))


def _record(point: Point, single: float, tta: float, **extra: Any) -> dict[str, Any]:
    return {"point": point.__dict__, "ap": {"single": single, "tta": tta},
            "settings": SETTINGS, **extra}


def _baseline(labeled: int, seed: int, budget: int, ap: float) -> dict[str, Any]:
    return _record(Point("figures", "boxes", labeled, seed, "baseline", budget), ap, ap + 2)


def _student(labeled: int, seed: int, budget: int, ap: float, role: str = "student",
             precision: float = 0.8, **extra: Any) -> dict[str, Any]:
    quality = {"bbox": {"AP": 40.0, "precision50": precision, "recall50": 0.5}}
    return _record(Point("figures", "boxes", labeled, seed, role, budget),  # type: ignore[arg-type]
                   ap, ap + 1, pseudo={"quality": quality}, **extra)


# 150 labeled: seed 0 peaks at x2, seed 1 still rises at x4.
RECORDS = [
    _baseline(150, 0, 1, 50.0), _baseline(150, 0, 2, 54.0), _baseline(150, 0, 4, 53.0),
    _baseline(150, 1, 1, 48.0), _baseline(150, 1, 2, 50.0), _baseline(150, 1, 4, 52.0),
    _student(150, 0, 4, 57.0), _student(150, 1, 4, 53.0, precision=0.6),
    _student(150, 0, 4, 60.0, role="oracle"), _student(150, 1, 4, 56.0, role="oracle"),
]


def test_plan_puts_baselines_before_the_students_that_need_them() -> None:
    names = [p.name for p in plan(AXES)]
    assert names[:6] == [f"figures-boxes-labeled150-seed0-{role}-x{b}" for role, b in
                         (("baseline", 1), ("baseline", 2), ("baseline", 4), ("student", 2),
                          ("student", 4), ("oracle", 4))]
    assert names[6].startswith("figures-boxes-labeled150-seed1-")
    # The levers of a labeled size follow all of its main points (they need the
    # students' teachers, and refine what the students answered).
    assert names[12:16] == [f"figures-boxes-labeled150-seed{sd}-{role}-x2" for sd in (0, 1)
                            for role in ("student-ignore", "student-round2")]
    assert names[16].startswith("figures-boxes-labeled40-seed0-")
    assert len(names) == 2 * 2 * (6 + 2)
    assert len(plan(replace(AXES, lever_budgets=()))) == 2 * 2 * 6


def test_pending_skips_the_points_whose_file_exists(tmp_path: Path) -> None:
    first = plan(AXES)[0]
    write_point(tmp_path, first, {"ap": {"single": 1.0, "tta": 1.0}, "settings": SETTINGS})
    left = pending(AXES, tmp_path)
    assert first not in left and len(left) == len(plan(AXES)) - 1
    (record,) = load_points(tmp_path)
    assert record["point"]["role"] == "baseline" and record["settings"] == SETTINGS


def test_points_chosen_by_name_keep_the_plan_order() -> None:
    todo = plan(AXES)
    names = [todo[5].name, todo[2].name]
    assert chosen(todo, names) == [todo[2], todo[5]]
    assert chosen(todo, None) == todo
    with pytest.raises(ConfigError, match="not pending: no-such-point"):
        chosen(todo[:3], ["no-such-point", todo[1].name])
    with pytest.raises(ConfigError, match=f"not pending: {todo[5].name}"):
        chosen(todo[:3], [todo[5].name])  # planned, but done already


def test_points_made_with_other_settings_are_refused() -> None:
    check_settings(RECORDS, SETTINGS)
    with pytest.raises(ConfigError, match="base_iters: 1000 -> 2000"):
        check_settings(RECORDS, {**SETTINGS, "base_iters": 2000})
    # Points recorded before the precision was: fp32, the only arithmetic then.
    check_settings(RECORDS, {**SETTINGS, "precision": "fp32"})
    with pytest.raises(ConfigError, match="precision: fp32 -> bf16"):
        check_settings(RECORDS, {**SETTINGS, "precision": "bf16"})


def test_the_committed_summary_is_the_committed_points_rendered(tmp_path: Path) -> None:
    """docs/sweep/SWEEP.md is what ``distill sweep --report-only`` makes of the committed
    points (the issue's rule: the summary comes from the point files alone), so a point
    committed without regenerating it fails here."""
    from distill.cli import build_parser
    from training.sweep_cli import run_sweep_from_args

    root = Path(__file__).resolve().parents[1] / "docs" / "sweep"
    args = build_parser().parse_args(["sweep", "--report-only", "--points-dir",
                                      str(root / "points"), "--report",
                                      str(tmp_path / "SWEEP.md")])
    assert run_sweep_from_args(args) == 0
    committed = (root / "SWEEP.md").read_text(encoding="utf-8")
    assert (tmp_path / "SWEEP.md").read_text(encoding="utf-8") == committed, (
        "docs/sweep/SWEEP.md is stale: run `distill sweep --report-only` and commit it")


def test_best_baseline_waits_for_every_budget_and_prefers_the_cheaper_tie() -> None:
    assert best_baseline(RECORDS, "figures", "boxes", 150, 0, (1, 2, 4)) == (2, 54.0)
    assert best_baseline(RECORDS, "figures", "boxes", 150, 1, (1, 2, 4)) == (4, 52.0)
    assert best_baseline(RECORDS, "figures", "boxes", 150, 0, (1, 2, 4, 8)) is None
    tie = [_baseline(40, 0, 1, 30.0), _baseline(40, 0, 2, 30.0)]
    assert best_baseline(tie, "figures", "boxes", 40, 0, (1, 2)) == (1, 30.0)


def test_summary_sets_students_against_their_seeds_best_baseline() -> None:
    text = render(RECORDS, AXES)
    assert "| 150 | 0 | 50.0 / 52.0 | 54.0 / 56.0 | 53.0 / 55.0 | x2: 54.0 | yes (peak x2) |" \
        in text
    assert "| 150 | 1 | 48.0 / 50.0 | 50.0 / 52.0 | 52.0 / 54.0 | x4: 52.0 | " \
           "no: still rising at x4 |" in text
    # Student x4: 57-54 and 53-52 single (+2.0 ± 1.4); with TTA 58-56 and 54-54 (+1.0 ±
    # 1.4); against the x4 baselines 57-53 and 53-52 (+2.5 ± 2.1); oracle gains 6 and 4,
    # so the share is 2.0 / 5.0 = 40%; precision 0.8 and 0.6.
    assert ("| 150 | student | x4 | 0,1 | 55.0 ± 2.8 | +2.0 ± 1.4 | 56.0 ± 2.8 | +1.0 ± 1.4 "
            "| +2.5 ± 2.1 | 40% | 0.70 / 0.50 |") in text
    assert "| 150 | oracle | x4 | 0,1 |" in text


def test_summary_puts_the_levers_after_the_student_with_their_oracle_share() -> None:
    levers = [_student(150, 0, 4, 59.0, role="student-round2"),
              _student(150, 1, 4, 54.0, role="student-round2"),
              _student(150, 0, 4, 55.0, role="student-ignore", ignore_factor=2.0)]
    text = render(RECORDS + levers, AXES)
    rows = [line for line in text.splitlines() if line.startswith("| 150 | ")
            and not line.startswith("| 150 | 0 ") and not line.startswith("| 150 | 1 ")]
    assert [row.split(" | ")[1] for row in rows] == ["student", "oracle",
                                                     "student-ignore (F = 2)",
                                                     "student-round2"]
    # Round 2 gains 59-54 and 54-52 over the best baselines (+3.5), the oracle 5.0: 70%.
    assert "| 150 | student-round2 | x4 | 0,1 | 56.5 ± 3.5 | +3.5 ± 2.1 |" in text
    assert rows[3].split(" | ")[9] == "70%"
    # One seed: its own share (55-54 of 60-54).
    assert rows[2].split(" | ")[9] == "17%"


def test_a_lever_keeps_the_teacher_of_its_committed_student() -> None:
    """Seed 0's best baseline is x2 (54.0); a student committed when x4 was the teacher
    keeps its levers on x4, so that they stay comparable with it."""
    from training.sweep import teacher_of

    student = _student(150, 0, 4, 57.0, teacher={"budget": 4, "iters": 4000,
                                                  "ap_single": 53.0})
    records = [*RECORDS[:6], student]
    lever = Point("figures", "boxes", 150, 0, "student-round2", 4)
    assert teacher_of(records, lever, AXES) == (4, 53.0)
    assert teacher_of(records, replace(lever, role="student"), AXES) == (2, 54.0)
    assert teacher_of(records, replace(lever, budget=2), AXES) == (2, 54.0)  # none at x2
    with pytest.raises(ConfigError, match="needs the baselines"):
        teacher_of(records[:2], lever, AXES)


def test_lever_points_keep_one_ignore_factor() -> None:
    from training.sweep import check_ignore_factor

    made = _student(150, 0, 2, 50.0, role="student-ignore", ignore_factor=2.0)
    check_ignore_factor([made, *RECORDS], 2.0)
    with pytest.raises(ConfigError, match=r"--ignore-factor 2\.0, not 3\.0"):
        check_ignore_factor([made], 3.0)
    with pytest.raises(ConfigError, match="> 0"):
        check_ignore_factor([], 0.0)


def test_progress_names_the_next_point() -> None:
    text = render(RECORDS[:1], AXES, plan(AXES)[1:])
    assert "1 of 32 planned points done." in text
    assert "Next: `figures-boxes-labeled150-seed0-baseline-x2`" in text


@pytest.mark.slow
def test_quick_sweep_writes_one_file_per_point_and_resumes(tmp_path: Path) -> None:
    from training.experiment_config import quick_config
    from training.sweep import run_sweep

    torch.set_num_threads(1)
    base = quick_config(tmp_path / "runs", progress=False, command=["distill", "sweep"],
                        ignore_factor=2.0)
    axes = Axes(labeled_sizes=(6,), tasks=("boxes",), seeds=(0,), baseline_budgets=(1, 2),
                student_budgets=(2,), oracle_budgets=(2,), lever_budgets=(2,))
    points = tmp_path / "sweep" / "points"
    written = run_sweep(base, axes, points, max_points=3)
    assert [p.stem for p in written] == [p.name for p in plan(axes)[:3]]
    (student,) = [r for r in load_points(points) if r["point"]["role"] == "student"]
    best = best_baseline(load_points(points), "figures", "boxes", 6, 0, (1, 2))
    assert best is not None and student["teacher"]["budget"] == best[0]
    assert student["iters"] == 12 and "precision50" in student["pseudo"]["quality"]["bbox"]
    assert any("--box-pooling raw" in c for c in student["commands"])
    # The next run does only what is left: the oracle, then the levers.
    assert [p.stem for p in run_sweep(base, axes, points)] == [p.name for p in plan(axes)[3:]]
    summary = (tmp_path / "sweep" / "SWEEP.md").read_text()
    assert "6 of 6 planned points done." in summary and "| 6 | oracle | x2 | 0 |" in summary
    records = {r["point"]["role"]: r for r in load_points(points)}
    ignore, round2 = records["student-ignore"], records["student-round2"]
    assert ignore["ignore_factor"] == 2.0 and ignore["teacher"] == student["teacher"]
    assert any("--ignore-factor 2" in c for c in ignore["commands"])
    # Round 2's labeler is the round-1 student of its budget, whose committed AP it cites.
    assert round2["teacher"]["round1"] == f"student-x2-teacher-x{best[0]}"
    assert round2["teacher"]["committed_ap_single"] == student["ap"]["single"]
    assert round2["teacher"]["ap_single"] == student["ap"]["single"]  # same checkpoint
    assert any(f"--teacher {tmp_path}" in c and "student-x2" in c and "annotate" in c
               for c in round2["commands"])
    assert "| 6 | student-round2 | x2 | 0 |" in summary


@pytest.mark.slow
def test_a_terminated_sweep_keeps_the_time_its_step_ran(tmp_path: Path) -> None:
    """SIGTERM (how a session stops a background sweep) unwinds the point: the training
    step records its partial time, which the resumed point's wall time includes."""
    import json
    import signal
    import subprocess
    import sys
    import time

    script = ("import sys; from pathlib import Path; import torch; "
              "from training.experiment_config import quick_config; "
              "from training.sweep import run_sweep; from training.sweep_points import Axes; "
              "torch.set_num_threads(1); "
              "run_sweep(quick_config(Path(sys.argv[1]), progress=False), "
              "Axes(labeled_sizes=(6,), tasks=('boxes',), seeds=(0,), "
              "baseline_budgets=(100,), student_budgets=(), oracle_budgets=(), "
              "lever_budgets=()), Path(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "runs"),
                             str(tmp_path / "points")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "train baseline-x100 ..." in line:
                break
        else:
            raise AssertionError("the point never started training")
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    partial = tmp_path / "runs" / "figures-labeled6" / "boxes" / "seed0" / "partial-times.json"
    assert json.loads(partial.read_text())["train baseline-x100"] >= 2.5
    assert not (tmp_path / "points").is_dir() or not any((tmp_path / "points").iterdir())

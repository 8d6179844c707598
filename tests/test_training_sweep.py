"""The sweep's summary on hand-built results: the comparison with the best baseline."""

from __future__ import annotations

from typing import Any

from training.sweep import best_baselines, render_sweep


def _run(seed: int, baseline: float, student: float) -> dict[str, Any]:
    scores = {"baseline": {"bbox": {"AP": baseline}}, "student": {"bbox": {"AP": student}}}
    return {"task": "boxes", "seed": seed, "scores": scores}


def _point(labeled: int, budget: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"labeled": labeled, "budget": budget, "iters": 1000 * budget, "runs": runs}


# 40 labeled: the baselines peak at x2 on both seeds; 150 labeled: seed 1 still rises at x4.
POINTS = [
    _point(40, 1, [_run(0, 30.0, 33.0), _run(1, 28.0, 31.0)]),
    _point(40, 2, [_run(0, 34.0, 36.0), _run(1, 32.0, 33.0)]),
    _point(40, 4, [_run(0, 33.0, 37.0), _run(1, 31.0, 34.0)]),
    _point(150, 1, [_run(0, 50.0, 49.0), _run(1, 48.0, 47.0)]),
    _point(150, 4, [_run(0, 49.0, 52.0), _run(1, 51.0, 52.0)]),
]


def test_best_baseline_is_the_highest_over_budgets_per_seed() -> None:
    assert best_baselines(POINTS, "boxes", 40) == {0: (2, 34.0), 1: (2, 32.0)}
    assert best_baselines(POINTS, "boxes", 150) == {0: (1, 50.0), 1: (4, 51.0)}
    assert best_baselines(POINTS, "keypoints", 40) == {}


def test_summary_compares_each_student_with_its_seeds_best_baseline() -> None:
    sweep = {"config": {"family": "figures", "seeds": [0, 1], "base_iters": 1000,
                        "tasks": ["boxes"], "labeled_sizes": [40, 150], "budgets": [1, 2, 4]},
             "points": POINTS, "command": ["distill", "sweep"]}
    text = render_sweep(sweep)
    # x4 students: 37-34 and 34-32 at 40 labeled (+2.5 ± 0.7); 52-50 and 52-51 at 150.
    assert "| 40 | x2, x2 | yes | x4 | +2.5 ± 0.7 |" in text
    assert "| 40 | x2, x2 | yes | x1 | -1.0 ± 0.0 |" in text  # 33-34, 31-32
    assert "| 150 | x1, x4 | not by x4 on every seed | x4 | +1.5 ± 0.7 |" in text

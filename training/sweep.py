"""When does the student pay? The experiment over labeled-set sizes and training budgets.

``distill sweep`` runs :func:`training.experiment.run_experiment` once per (labeled-set
size, budget multiplier), each in its own run folder
(``<out>/labeled<L>-x<B>``, so every point resumes on its own), with the oracle on:
the teacher is the equal-budget baseline at every point (``teacher_iters ==
student_iters == base x B``). The summary table gives, per task, labeled size and
budget, the baseline's AP, the student's gain over it and the oracle's (the same
images with their true labels), mean ± spread over seeds, single pass and with TTA on
both sides; the share of the oracle's gain the student gets says how much of what the
unlabeled images can give the pseudo-labels deliver. A second table per task holds
the students against the *best* baseline of their labeled size over every budget swept
(per seed): the baseline trained until its test AP stops rising, where a user's
converged teacher would be, and says whether it did stop within the budgets.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from distill.fileio import write_json_atomic
from training.experiment_config import ExperimentConfig, add_arguments, config_from_args
from training.report import METRIC, mean_spread, row_values, signed_mean_spread


def point_config(base: ExperimentConfig, labeled: int, budget: int) -> ExperimentConfig:
    """The experiment at one point of the sweep (its own folder and report)."""
    out = base.out_dir / f"labeled{labeled}-x{budget}"
    return replace(base, out_dir=out, labeled=labeled, oracle=True,
                   teacher_iters=base.student_iters * budget,
                   student_iters=base.student_iters * budget, results_md=out / "RESULTS.md")


def run_sweep(base: ExperimentConfig, labeled_sizes: list[int], budgets: list[int]
              ) -> dict[str, Any]:
    """Runs every point (smallest budgets first, so that the cheap half arrives first) and
    writes ``SWEEP.md`` and ``sweep.json`` into ``base.out_dir``."""
    from training.experiment import run_experiment

    points = []
    for budget in sorted(budgets):
        for labeled in labeled_sizes:
            cfg = point_config(base, labeled, budget)
            results = run_experiment(cfg)
            points.append({"labeled": labeled, "budget": budget,
                           "iters": cfg.student_iters, "runs": results["runs"]})
    sweep = {"config": {"labeled_sizes": labeled_sizes, "budgets": budgets,
                        "base_iters": base.student_iters, "seeds": list(base.seeds),
                        "tasks": list(base.tasks), "family": base.family},
             "points": points, "command": base.command}
    base.out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(base.out_dir / "sweep.json", sweep)
    markdown = render_sweep(sweep)
    (base.out_dir / "SWEEP.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return sweep


def render_sweep(sweep: dict[str, Any]) -> str:
    """The summary: one table per task, one row per (labeled size, budget)."""
    cfg = sweep["config"]
    out = [f"# When the student pays: labeled sizes x budgets ({cfg['family']} family)", "",
           f"Seeds {cfg['seeds']}; budget x1 = {cfg['base_iters']} iterations for the teacher "
           "(= equal-budget baseline), the student and the oracle alike. Δ: paired per seed, "
           "mean ± sample standard deviation.", ""]
    for task in cfg["tasks"]:
        out += [f"## {task}", "",
                "| labeled | budget | iters | baseline AP | student Δ | oracle Δ | share | "
                "baseline AP (TTA) | student Δ (TTA) | oracle Δ (TTA) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for point in sweep["points"]:
            runs = [r for r in point["runs"] if r["task"] == task]
            if not runs:
                continue
            cells = [str(point["labeled"]), f"x{point['budget']}", str(point["iters"])]
            for suffix in ("", "+tta"):
                base = row_values(runs, "baseline" + suffix, METRIC[task], "AP")
                student = _delta(runs, "student" + suffix, "baseline" + suffix, task)
                oracle = _delta(runs, "student-oracle" + suffix, "baseline" + suffix, task)
                cells += [mean_spread(base), signed_mean_spread(student),
                          signed_mean_spread(oracle)]
                if not suffix:
                    share = (f"{100 * statistics.mean(student) / statistics.mean(oracle):.0f}%"
                             if student and oracle and statistics.mean(oracle) > 0 else "–")
                    cells.append(share)
            out.append("| " + " | ".join(cells) + " |")
        out += ["", *_against_best_baseline(sweep["points"], task), ""]
    out += ["Command:", "", "```", " ".join(sweep.get("command") or ["distill", "sweep"]),
            "```", ""]
    return "\n".join(out)


def best_baselines(points: list[dict[str, Any]], task: str, labeled: int
                   ) -> dict[int, tuple[int, float]]:
    """Per seed, the budget whose baseline scored highest (single pass) at this labeled
    size, and that AP: the baseline trained until its test AP stops rising, as far as the
    swept budgets tell."""
    m = METRIC[task]
    best: dict[int, tuple[int, float]] = {}
    for point in _points_at(points, labeled):
        for run in point["runs"]:
            if run["task"] == task and "baseline" in run["scores"]:
                ap = float(run["scores"]["baseline"][m]["AP"])
                if run["seed"] not in best or ap > best[run["seed"]][1]:
                    best[run["seed"]] = (point["budget"], ap)
    return best


def _against_best_baseline(points: list[dict[str, Any]], task: str) -> list[str]:
    """Each student (single pass) minus its seed's best baseline over all budgets."""
    m = METRIC[task]
    lines = ["Students against the best baseline of their labeled size over every budget "
             "(per seed; single pass). The best is picked by test AP, which flatters the "
             "baseline: a conservative bar for the student.", "",
             "| labeled | best baseline: budget per seed | stopped rising? | budget | "
             "student − best baseline |", "|---|---|---|---|---|"]
    for labeled in sorted({p["labeled"] for p in points}):
        best = best_baselines(points, task, labeled)
        if not best:
            continue
        at = _points_at(points, labeled)
        top = at[-1]["budget"]
        budgets = ", ".join(f"x{b}" for _, (b, _) in sorted(best.items()))
        stopped = ("yes" if all(b < top for b, _ in best.values())
                   else f"not by x{top} on every seed")
        for point in at:
            gains = [r["scores"]["student"][m]["AP"] - best[r["seed"]][1]
                     for r in point["runs"] if r["task"] == task and r["seed"] in best
                     and "student" in r["scores"]]
            lines.append(f"| {labeled} | {budgets} | {stopped} | x{point['budget']} | "
                         f"{signed_mean_spread(gains)} |")
    return lines


def _points_at(points: list[dict[str, Any]], labeled: int) -> list[dict[str, Any]]:
    """The sweep's points of one labeled-set size, smallest budget first."""
    return sorted((p for p in points if p["labeled"] == labeled), key=lambda p: p["budget"])


def _delta(runs: list[dict[str, Any]], row: str, base: str, task: str) -> list[float]:
    m = METRIC[task]
    return [r["scores"][row][m]["AP"] - r["scores"][base][m]["AP"] for r in runs
            if row in r["scores"] and base in r["scores"]]


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``distill sweep``: the experiment's flags plus the sweep's axes."""
    add_arguments(p)
    p.set_defaults(out_dir=Path("runs/sweep"))
    p.add_argument("--labeled-sizes", type=int, nargs="+", default=[40, 150],
                   help="labeled-set sizes (each a point with every budget)")
    p.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4],
                   help="multiples of --student-iters for teacher, baseline, student, oracle")


def run_sweep_from_args(args: argparse.Namespace) -> int:
    """``distill sweep``."""
    base = config_from_args(args)
    run_sweep(replace(base, results_md=None), args.labeled_sizes, args.budgets)
    return 0

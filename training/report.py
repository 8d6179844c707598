"""The experiment's Markdown report: the paper-style table, times, machine, commands."""

from __future__ import annotations

import statistics
from typing import Any

from training.variants import VARIANTS, oracle_of

LABELS = {v.name: v.label for v in VARIANTS}
METRIC = {"keypoints": "keypoints", "boxes": "bbox"}


def mean_spread(values: list[float]) -> str:
    """``mean ± sample std`` over seeds (just the value for one seed)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def row_values(runs: list[dict[str, Any]], row: str, metric: str, stat: str) -> list[float]:
    return [r["scores"][row][metric][stat] for r in runs if row in r["scores"]]


def task_table(task: str, runs: list[dict[str, Any]], tta: str) -> list[str]:
    """Markdown lines of one task's table; deltas are paired per seed against the
    baseline with the same inference (single pass vs single pass, TTA vs TTA)."""
    metric = METRIC[task]
    extra = ["box AP"] if task == "keypoints" else []
    oracle = any("student-oracle" in r["scores"] for r in runs)
    head = ["model", "inference", "iters", "AP", "AP50", "AP75", *extra,
            "Δ AP vs baseline", *(["share of oracle gain"] if oracle else []), "AP per seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # With equal budgets the pipeline trains the teacher once and it is the baseline.
    shared = all(r["iters"].get("teacher") == r["iters"].get("baseline") for r in runs)
    labels = dict(LABELS)
    if shared:
        del labels["teacher"]
        labels["baseline"] = "teacher = baseline (labeled only, student's budget)"
    for name, label in labels.items():
        for suffix in ("", "+tta"):
            row = name + suffix
            if not any(row in r["scores"] for r in runs):
                continue
            base = "baseline" + suffix
            ap = row_values(runs, row, metric, "AP")
            delta = [r["scores"][row][metric]["AP"] - r["scores"][base][metric]["AP"]
                     for r in runs if row in r["scores"] and base in r["scores"]]
            iters = sorted({r["iters"].get(name) for r in runs})
            cells = [label, f"TTA ({tta})" if suffix else "single pass",
                     "/".join(str(i) for i in iters), mean_spread(ap),
                     mean_spread(row_values(runs, row, metric, "AP50")),
                     mean_spread(row_values(runs, row, metric, "AP75"))]
            if extra:
                cells.append(mean_spread(row_values(runs, row, "bbox", "AP")))
            cells.append("–" if name == "baseline" else signed_mean_spread(delta))
            if oracle:
                cells.append(_oracle_share(runs, name, suffix, metric))
            cells.append(", ".join(f"{v:.1f}" for v in ap))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _oracle_share(runs: list[dict[str, Any]], name: str, suffix: str, metric: str) -> str:
    """How much of the oracle's gain over the baseline a student gets: the mean gain of
    ``name`` over the mean gain of the oracle taught the same images' true labels, on the
    seeds that have both (shifted students against the shifted oracle)."""
    oracle_row = oracle_of(name)
    if oracle_row is None:
        return "–"
    oracle = oracle_row + suffix
    row, base = name + suffix, "baseline" + suffix
    both = [r["scores"] for r in runs if {row, base, oracle} <= set(r["scores"])]
    if not both:
        return "–"
    gain = statistics.mean(s[row][metric]["AP"] - s[base][metric]["AP"] for s in both)
    ceiling = statistics.mean(s[oracle][metric]["AP"] - s[base][metric]["AP"] for s in both)
    return f"{100 * gain / ceiling:.0f}%" if ceiling > 0 else "– (oracle gains nothing)"


def signed_mean_spread(values: list[float]) -> str:
    """``+mean ± sample std`` of paired differences (just the signed value for one seed)."""
    if not values:
        return "–"
    mean = statistics.mean(values)
    spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{mean:+.1f}{spread}"


def _pseudo_table(task: str, runs: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: what each pseudo-label file kept and how good it is."""
    metric = METRIC[task]
    lines = ["| pseudo-labels | seed | kept | per image | ignore regions | precision@0.5 | "
             "recall@0.5 | AP |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for name, p in r["pseudo"].items():
            q = p.get("quality", {}).get(metric)
            cells = [name, str(r["seed"]), f"{p['annotations']} on {p['images']} images",
                     f"{p['per_image']:.2f}", str(p.get("ignore_regions", 0))]
            cells += ([f"{q['precision50']:.2f}", f"{q['recall50']:.2f}", f"{q['AP']:.1f}"]
                      if q else ["–"] * 3)
            lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def _invocations(results: dict[str, Any]) -> str:
    """``97.3 min`` for one invocation; each listed when the run was resumed."""
    calls = results.get("invocations") or [{"wall_s": results["wall_s"]}]
    if len(calls) == 1:
        return f"{calls[0]['wall_s'] / 60:.1f} min"
    parts = [f"{c['wall_s'] / 60:.1f} min" + (" (resumed)" if i else "")
             for i, c in enumerate(calls)]
    return f"{len(calls)} invocations, " + " + ".join(parts)


def render_markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    cfg, runs, mach = results["config"], results["runs"], results["machine"]
    out = ["# Data distillation on the synthetic data set", ""]
    if cfg.get("quick"):
        out += ["**Quick mode (smoke test): sizes and schedules far too small for the "
                "numbers to mean anything.**", ""]
    out += [
        f"Finished {results['finished']} on {mach['cpu']} ({mach['cores']} cores; "
        f"{mach['jobs']} pipelines in parallel, {mach['threads_per_job']} torch thread(s) "
        f"each), torch {mach['torch']}, Python {mach['python']}. Wall time of the "
        f"invocations that completed: {_invocations(results)}. The steps' own times "
        "(below; they include time spent before an interruption, which no completed "
        f"invocation shows) add up to {sum(sum(r['times'].values()) for r in runs) / 60:.0f} "
        "min.", "",
        "## Setup", "",
        f"- Data: `distill.data.synth`, per seed {cfg['labeled']} labeled, {cfg['unlabeled']} "
        f"unlabeled, {cfg['shifted']} shifted unlabeled and {cfg['test']} test images; "
        f"seeds {cfg['seeds']} (the seed sets both the data and the training).",
        f"- Architecture `{cfg['arch']}`, batch {cfg['batch_size']}, lr {cfg['lr']}, SGD "
        "momentum 0.9, weight decay 1e-4, linear warm-up, lr /10 at 70% and 90%, flip + "
        "scale jitter.",
        f"- Teacher: {cfg['teacher_iters']} iterations on the labeled split"
        + (" (with the student's budget it is the same training as the baseline, so it is "
           "trained once)" if cfg["teacher_iters"] == cfg["student_iters"] else "")
        + ". Pseudo-labels: "
        f"`distill annotate` with TTA preset `{cfg['tta']}`, thresholds calibrated to the "
        "labeled statistics.",
        f"- Student: from scratch, {cfg['student_iters']} iterations, minibatches mixing "
        "labeled and pseudo-labeled images 6:4 in expectation.",
        f"- Baseline: same architecture and seed (same initial weights), labeled only, "
        f"{cfg['student_iters']} iterations: the student's budget.",
        "- Scores: COCO AP (%) on the test split (keypoints: OKS with the card's sigmas). "
        "Mean ± sample standard deviation over seeds; Δ is paired per seed.",
        "- Learning rate, batch and schedule shape are the trainer's defaults; sizes, "
        "iterations and seeds are the command's (below). How the experiment's defaults "
        "were chosen: `training/experiment.py`'s docstring.",
        "- Pseudo-label precision / recall: the kept pseudo-labels against the unlabeled "
        "split's own annotations (the synthetic data keeps them; the teacher and the "
        "student never see them), matched at IoU 0.5 (boxes) or OKS 0.5 (keypoints).", ""]
    for task in cfg["tasks"]:
        task_runs = [r for r in runs if r["task"] == task]
        if not task_runs:
            continue
        what = "keypoint AP (OKS)" if task == "keypoints" else "box AP"
        out += [f"## {task.capitalize()}: {what}", ""]
        out += task_table(task, task_runs, cfg["tta"])
        out += ["", *_pseudo_table(task, task_runs), ""]
    out += ["## Wall times (seconds)", "", "| task | seed | step | s |", "|---|---|---|---|"]
    for r in runs:
        for step, sec in r["times"].items():
            out.append(f"| {r['task']} | {r['seed']} | {step} | {sec:.0f} |")
    out += ["", "## Commands", "", "The experiment:", "", "```",
            " ".join(cfg.get("command") or ["distill", "experiment"]), "```", "",
            "Equivalent steps (first seed of each task; other seeds differ in paths and "
            "`--seed`):", "", "```"]
    seen: set[str] = set()
    for r in runs:
        if r["task"] not in seen:
            seen.add(r["task"])
            out += r["commands"]
    out += ["```", ""]
    return "\n".join(out)

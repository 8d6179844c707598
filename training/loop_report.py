"""The report of ``distill loop`` (and so of the demo): the comparison table, a bar plot and
images with their pseudo-labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from distill.coco import objects

Scores = dict[str, dict[str, float]]  # COCOeval type -> metric -> percent
ROW_LABELS = {"student": "student", "teacher": "teacher", "baseline": "baseline (equal budget)",
              "oracle": "oracle (true labels)"}
_COLOURS = [(230, 60, 60), (60, 160, 230), (250, 200, 40), (120, 220, 120), (200, 120, 230)]


def comparison_table(rows: dict[str, Scores], task: str,
                     deltas: dict[str, float] | None = None) -> str:
    """Markdown table of box AP (and keypoint AP) per model; ``deltas``: a last column of
    each row's headline AP minus the equal-budget baseline's."""
    keypoints = task == "keypoints"
    head = "| model | box AP | box AP50 |" + (" keypoint AP | keypoint AP50 |"
                                              if keypoints else "")
    rule = "| --- | ---: | ---: |" + (" ---: | ---: |" if keypoints else "")
    if deltas is not None:
        head, rule = head + " vs baseline |", rule + " ---: |"
    lines = [head, rule]
    for name, scores in rows.items():
        b = scores["bbox"]
        line = f"| {name} | {b['AP']:.1f} | {b['AP50']:.1f} |"
        if keypoints:
            k = scores["keypoints"]
            line += f" {k['AP']:.1f} | {k['AP50']:.1f} |"
        if deltas is not None:
            line += f" {deltas[name]:+.1f} |" if name in deltas else " |"
        lines.append(line)
    return "\n".join(lines)


def loop_rows(results: dict[str, Any]) -> tuple[dict[str, Scores], dict[str, float]]:
    """The loop's models as table rows (single pass, then ``+ TTA``) and their deltas
    against the baseline (a ``+ TTA`` row against the baseline with TTA)."""
    rows: dict[str, Scores] = {}
    deltas: dict[str, float] = {}
    for name, row in results["rows"].items():
        label = ROW_LABELS.get(name, name.replace("-round", " round "))
        for kind, suffix in (("single", ""), ("tta", " + TTA")):
            rows[label + suffix] = row[kind]
            if name != "baseline":
                deltas[label + suffix] = results["deltas"][name][kind]
    return rows, deltas


def _plot(rows: dict[str, Scores], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(rows)
    values = [rows[n].get("keypoints", rows[n]["bbox"])["AP"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names)), 3.4), dpi=120)
    palette = ["#9aa", "#6bb", "#bbb", "#8cc", "#e63", "#f96", "#c36", "#e8a"]
    bars = ax.bar(names, values, color=[palette[i % len(palette)] for i in range(len(names))])
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel(("keypoint" if task == "keypoints" else "box") + " AP (test split)")
    ax.set_ylim(0, max([*values, 1.0]) * 1.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_pseudo_labels(image: Path, anns: list[dict[str, Any]], skeleton: list[list[int]],
                       out: Path) -> None:
    """One image with its pseudo-label boxes, scores and kept keypoints drawn."""
    img = Image.open(image).convert("RGB")
    img = img.resize((img.width * 2, img.height * 2))  # small images: draw at 2x
    draw = ImageDraw.Draw(img)
    for ann in anns:
        colour = _COLOURS[(ann["category_id"] - 1) % len(_COLOURS)]
        x, y, w, h = (2 * v for v in ann["bbox"])
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
        draw.text((x + 2, y + 1), f"{ann['score']:.2f}", fill=colour)
        kps = ann.get("keypoints")
        if not kps:
            continue
        pts = [(2 * kps[i], 2 * kps[i + 1], kps[i + 2]) for i in range(0, len(kps), 3)]
        for a, b in skeleton:
            if pts[a - 1][2] > 0 and pts[b - 1][2] > 0:
                draw.line([pts[a - 1][:2], pts[b - 1][:2]], fill=(255, 255, 255), width=2)
        for px, py, v in pts:
            if v > 0:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    img.save(out)


def _round_of(pseudo: str) -> str:
    """``pseudo`` -> "round 1 (the teacher's)", ``pseudo-round3`` -> "round 3 (round 2's
    student's)"."""
    if pseudo == "pseudo":
        return "round 1 (the teacher's)"
    n = int(pseudo.removeprefix("pseudo-round"))
    return f"round {n} (round {n - 1}'s student's)"


def write_report(out: Path, results: dict[str, Any], pseudo: Path, images_dir: Path, *,
                 title: str = "distill loop", examples: int = 4) -> Path:
    """Prints the table and writes ``out/report/report.md`` with its pictures: ``results``
    is what ``distill loop`` writes to ``report.json``; ``pseudo`` the round-1 pseudo-labels
    of the images in ``images_dir``, some of which are drawn."""
    task = results["task"]
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    rows, deltas = loop_rows(results)
    table = comparison_table(rows, task, deltas)
    print("\n" + table)
    _plot(rows, folder / "ap.png", task)
    data = json.loads(pseudo.read_text())
    skeleton = data["categories"][0].get("skeleton", []) if task == "keypoints" else []
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in objects(data):
        by_image.setdefault(ann["image_id"], []).append(ann)
    shown = [img for img in data["images"] if by_image.get(img["id"])][:examples]
    pictures = []
    for img in shown:
        name = f"pseudo_{Path(img['file_name']).stem}.png"
        draw_pseudo_labels(images_dir / img["file_name"], by_image[img["id"]], skeleton,
                           folder / name)
        pictures.append(f"![{img['file_name']}]({name})")
    info = data["info"]
    cfg = results["config"]
    counts = [f"- {_round_of(name)}: {c['annotations']} on {c['images']} unlabeled images "
              f"({c['per_image']} per image, {c['ignore_regions']} ignore regions)"
              for name, c in results["pseudo"].items()]
    minutes = sum(results["times"].values()) / 60
    teacher = (f"the imported teacher {cfg['teacher']}" if cfg.get("teacher")
               else f"the service's teacher at {cfg['url']}" if "teacher" not in results["rows"]
               else f"teacher {cfg['teacher_iters']} iterations")
    preflight: list[str] = []
    if "preflight" in results:
        from training.loop import main_metric
        from training.preflight import verdict_lines

        hidden = results["held_out"]["preflight"]
        preflight = [f"Preflight: the labels of {hidden['hidden']} of the "
                     f"{hidden['hidden'] + hidden['visible']} labeled training images were "
                     "hidden and those images labeled by the teacher, which trained on the "
                     "others (as did the baseline); the oracle was taught their true labels.",
                     "", *verdict_lines(results["preflight"], main_metric(task)), ""]
        print("\n".join(["", *preflight]))
    md = [f"# {title} ({task})", "", *preflight,
          f"Held-out split: {results['held_out']['source']}. Budgets: {teacher}, "
          "each student and the baseline "
          f"{cfg['student_iters']}; TTA preset `{cfg['tta']}`. Steps' wall time "
          f"{minutes:.1f} minutes (`times.json`). Held-out AP (COCOeval, percent); the last "
          "column is the headline AP minus the equal-budget baseline's (with TTA on both "
          "sides for the + TTA rows):", "",
          table, "", "![AP per model](ap.png)", "",
          "Pseudo-labels kept:", "",
          *counts, "",
          f"Round 1: transforms {info.get('transforms')}, thresholds "
          f"{info.get('thresholds')}.", "",
          "Commands of the steps:", "", "```sh", *results["commands"], "```", "",
          *pictures, ""]
    path = folder / "report.md"
    path.write_text("\n".join(md))
    return path

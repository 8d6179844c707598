"""The demo's report: the comparison table, a bar plot and images with their pseudo-labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from distill.coco import objects
from training.evaluate import EvalReport

_COLOURS = [(230, 60, 60), (60, 160, 230), (250, 200, 40), (120, 220, 120), (200, 120, 230)]


def comparison_table(rows: dict[str, EvalReport], task: str) -> str:
    """Markdown table of box AP (and keypoint AP) per model."""
    head = "| model | box AP | box AP50 |" + (" keypoint AP | keypoint AP50 |"
                                              if task == "keypoints" else "")
    lines = [head, "| --- | ---: | ---: |" + (" ---: | ---: |" if task == "keypoints" else "")]
    for name, rep in rows.items():
        b = rep.scores["bbox"]
        line = f"| {name} | {b['AP']:.1f} | {b['AP50']:.1f} |"
        if task == "keypoints":
            k = rep.scores["keypoints"]
            line += f" {k['AP']:.1f} | {k['AP50']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def _plot(rows: dict[str, EvalReport], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(rows)
    values = [rows[n].main for n in names]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    bars = ax.bar(names, values, color=["#9aa", "#6bb", "#e63"][: len(names)])
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


def write_report(out: Path, task: str, rows: dict[str, EvalReport], pseudo: Path,
                 images_dir: Path, *, minutes: float, examples: int = 4) -> Path:
    """Prints the table and writes ``out/report/report.md`` with its pictures."""
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    table = comparison_table(rows, task)
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
    md = [f"# distill demo ({task})", "",
          f"Wall time: {minutes:.1f} minutes. Test split AP (COCOeval, percent):", "",
          table, "", "![AP per model](ap.png)", "",
          f"Pseudo-labels: {len(objects(data))} on {len(data['images'])} unlabeled images "
          f"({len(data['annotations']) - len(objects(data))} ignore regions), transforms "
          f"{info.get('transforms')}, thresholds {info.get('thresholds')}.",
          "", *pictures, ""]
    path = folder / "report.md"
    path.write_text("\n".join(md))
    return path

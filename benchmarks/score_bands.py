"""How right a teacher's predictions are, by score band: what a category short of
candidates would keep if it kept everything down to the detector's score floor.

Reads a prediction log (``<out>.predictions.jsonl`` of ``distill annotate``) and the
hidden truth of the same images (a synthetic split keeps it), matches each category's
predictions greedily by score to unmatched true boxes at IoU >= 0.5 (as COCO does at
AP50), and prints per band the number of predictions and the share that are right::

    python benchmarks/score_bands.py --log runs/e13/boxes/seed0/pseudo.json.predictions.jsonl \\
        --truth runs/e13/data/seed0/annotations/unlabeled_boxes.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from distill.predictions import PredictionLog

BANDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.01)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``others`` (M, 4)."""
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", type=Path, required=True, nargs="+",
                    help="prediction logs (several: pooled)")
    ap.add_argument("--truth", type=Path, required=True, nargs="+",
                    help="the COCO truth of each log's images, in the same order")
    args = ap.parse_args()
    right: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for log_path, truth_path in zip(args.log, args.truth, strict=True):
        truth = json.loads(truth_path.read_text())
        ids = {img["file_name"]: img["id"] for img in truth["images"]}
        boxes: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
        for a in truth["annotations"]:
            if not a.get("iscrowd", 0):
                x, y, w, h = a["bbox"]
                boxes[(a["image_id"], a["category_id"])].append([x, y, x + w, y + h])
        for rec in PredictionLog(log_path).read().values():
            if rec.error is not None:
                continue
            order = np.argsort([-s for s in rec.scores], kind="stable")
            used: dict[int, set[int]] = defaultdict(set)
            for i in order:
                cat = rec.category_ids[i]
                gt = np.asarray(boxes.get((ids[rec.file_name], cat), []), dtype=float)
                hit = False
                if len(gt):
                    overlaps = iou(np.asarray(rec.boxes[i], dtype=float), gt)
                    overlaps[list(used[cat])] = -1.0
                    best = int(overlaps.argmax())
                    if overlaps[best] >= 0.5:
                        used[cat].add(best)
                        hit = True
                right[cat].append((rec.scores[i], hit))
    print("category  " + "  ".join(f"[{lo:.2f},{hi:.2f})" for lo, hi in itertools.pairwise(BANDS)))
    for cat in sorted(right):
        cells = []
        for lo, hi in itertools.pairwise(BANDS):
            band = [ok for s, ok in right[cat] if lo <= s < hi]
            cells.append(f"{len(band):5d} {100 * np.mean(band):3.0f}%" if band else "    –      ")
        print(f"{cat:8d}  " + "  ".join(cells))
    print("(each cell: predictions in the band, and the share right at IoU 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Label Studio annotations (its JSON export: tasks with ``annotations``) as COCO, and
their merge into a labeled set: how the corrections made in Label Studio become the
labeled set of the next teacher.

A task counts when it has a finished annotation (not cancelled); the latest one is
used. ``rectanglelabels`` regions become boxes (a rotated one, its enclosing box),
``keypointlabels`` regions become keypoints of the box their ``parentID`` names (else of
the smallest box of the right category that contains the point), with visibility 2;
keypoints not placed are 0 0 0. Coordinates are percent of ``original_width`` /
``original_height`` (from the regions, or ``sizes`` for a task without any). Which
category a label value is, and which keypoint, is the caller's mapping (the project's
labeling config read with the YOLO example's conventions). Pure Python.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import DataError


@dataclass(frozen=True)
class LabelMap:
    """Label value -> category id (boxes), and -> (category id, keypoint index)."""

    boxes: dict[str, int]
    points: dict[str, tuple[int, int]]


@dataclass
class Imported:
    """The COCO file of the annotated tasks, and what was left out and why."""

    coco: dict[str, Any]
    skipped: Counter[str] = field(default_factory=Counter)


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's latest finished annotation, or None."""
    done = [a for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
            and isinstance(a.get("result"), list)]
    return max(done, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0),
               default=None)


def tasks_to_coco(tasks: list[dict[str, Any]], categories: list[dict[str, Any]],
                  labels: LabelMap, file_name: Callable[[dict[str, Any]], str],
                  sizes: dict[Any, tuple[int, int]] | None = None) -> Imported:
    """COCO (``categories`` as given) of the tasks' latest finished annotations."""
    cats = {int(c["id"]): c for c in categories}
    out = Imported({"images": [], "annotations": [], "categories": categories})
    for task in tasks:
        ann = latest_annotation(task)
        if ann is None:
            out.skipped["task without a finished annotation"] += 1
            continue
        regions = [r for r in ann["result"] if isinstance(r, dict)]
        size = next(((int(r["original_width"]), int(r["original_height"])) for r in regions
                     if r.get("original_width") and r.get("original_height")),
                    (sizes or {}).get(task.get("id")))
        if size is None:
            out.skipped["task whose image size is unknown (no regions)"] += 1
            continue
        image_id = len(out.coco["images"]) + 1
        out.coco["images"].append({"id": image_id, "file_name": file_name(task),
                                   "width": size[0], "height": size[1]})
        _objects(out, regions, image_id, size, cats, labels)
    return out


def _objects(out: Imported, regions: list[dict[str, Any]], image_id: int,
             size: tuple[int, int], cats: dict[int, dict[str, Any]], labels: LabelMap) -> None:
    w, h = size
    by_region: dict[Any, dict[str, Any]] = {}
    for r in regions:
        value = r.get("value") or {}
        if r.get("type") != "rectanglelabels":
            continue
        cat = labels.boxes.get(_label(value, "rectanglelabels"))
        if cat is None:
            out.skipped["box with a label that is no category"] += 1
            continue
        x1, y1, x2, y2 = _corners(value, w, h)
        k = len(cats[cat].get("keypoints") or [])
        obj = {"id": len(out.coco["annotations"]) + 1, "image_id": image_id,
               "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1],
               "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "segmentation": [],
               **({"keypoints": [0.0] * 3 * k, "num_keypoints": 0} if k else {})}
        out.coco["annotations"].append(obj)
        by_region[r.get("id")] = obj
    for r in regions:
        if r.get("type") != "keypointlabels":
            continue
        value = r.get("value") or {}
        where = labels.points.get(_label(value, "keypointlabels"))
        if where is None:
            out.skipped["keypoint with a label that is no keypoint"] += 1
            continue
        px, py = float(value["x"]) * w / 100, float(value["y"]) * h / 100
        parent = by_region.get(r.get("parentID"))
        if parent is None or parent["category_id"] != where[0]:
            parent = _containing(by_region.values(), where[0], px, py)
        if parent is None:
            out.skipped["keypoint outside every box of its category"] += 1
            continue
        parent["keypoints"][3 * where[1]:3 * where[1] + 3] = [px, py, 2]
        parent["num_keypoints"] = sum(1 for v in parent["keypoints"][2::3] if v > 0)


def _label(value: dict[str, Any], key: str) -> str:
    given = value.get(key)
    return str(given[0]) if isinstance(given, list) and given else ""


def _corners(value: dict[str, Any], w: int, h: int) -> tuple[float, float, float, float]:
    """The enclosing box in pixels (Label Studio rotates about the top-left corner)."""
    try:
        x, y = float(value["x"]) * w / 100, float(value["y"]) * h / 100
        bw, bh = float(value["width"]) * w / 100, float(value["height"]) * h / 100
        angle = math.radians(float(value.get("rotation") or 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"a rectangle region has value {value!r}") from exc
    c, s = math.cos(angle), math.sin(angle)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return max(0.0, min(xs)), max(0.0, min(ys)), min(float(w), max(xs)), min(float(h), max(ys))


def _containing(objs: Any, cat: int, px: float, py: float) -> dict[str, Any] | None:
    inside = [o for o in objs if o["category_id"] == cat
              and o["bbox"][0] <= px <= o["bbox"][0] + o["bbox"][2]
              and o["bbox"][1] <= py <= o["bbox"][1] + o["bbox"][3]]
    return min(inside, key=lambda o: o["area"], default=None)


def merge_labeled(labeled: dict[str, Any], corrected: dict[str, Any]) -> dict[str, Any]:
    """The labeled set with the corrected images added; an image it already has (same
    ``file_name``) takes the corrected annotations. Both must share the categories."""
    if [c["id"] for c in corrected["categories"]] != [c["id"] for c in labeled["categories"]]:
        raise DataError("the corrected annotations and the labeled set have other categories")
    replaced = {img["file_name"] for img in corrected["images"]}
    kept = [img for img in labeled["images"] if img["file_name"] not in replaced]
    kept_ids = {img["id"] for img in kept}
    anns = [a for a in labeled["annotations"] if a["image_id"] in kept_ids]
    next_image = max((int(img["id"]) for img in kept), default=0) + 1
    next_ann = max((int(a["id"]) for a in anns), default=0) + 1
    ids = {}
    images = list(kept)
    for n, img in enumerate(corrected["images"]):
        ids[img["id"]] = next_image + n
        images.append({**img, "id": next_image + n})
    for n, a in enumerate(corrected["annotations"]):
        anns.append({**a, "id": next_ann + n, "image_id": ids[a["image_id"]]})
    return {**labeled, "images": images, "annotations": anns}


def write_corrections(labeled: dict[str, Any], corrected: dict[str, Any],
                      skipped: Mapping[str, int], out: Path, *, corrections_only: bool,
                      source: str) -> str:
    """Writes ``corrected`` (merged into ``labeled`` unless ``corrections_only``) to
    ``out`` once it validates as COCO; returns the line that tells the user what was
    written, from ``source`` and what was left out (``skipped``: reason -> count). The
    last step of every import command (Label Studio, CVAT)."""
    from distill.coco import validate_coco
    from distill.fileio import write_json_atomic

    merged = corrected if corrections_only else merge_labeled(labeled, corrected)
    validate_coco(merged, source="the merged file")
    write_json_atomic(out, merged)
    left_out = "; ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    total = "" if corrections_only else f", {len(merged['images'])} images in all"
    return (f"wrote {out}: {len(corrected['images'])} annotated images with "
            f"{len(corrected['annotations'])} objects from {source}{total}"
            f"{'; left out: ' + left_out if left_out else ''}")

"""COCO I/O: reading and checking data sets, and their statistics.

Everything here works on any COCO-format keypoint or box data set:
categories, keypoint names and skeletons come from the file, not from code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from distill.card import LabeledStats, Task
from distill.errors import DataError

CocoDict = dict[str, Any]


def load_coco(path: Path) -> CocoDict:
    """Reads and checks a COCO file: the keys, ids and references the project relies on."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"COCO file {str(path)!r} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    validate_coco(data, source=str(path))
    return data


def validate_coco(data: Any, *, source: str = "COCO data") -> None:
    """Raises :class:`DataError` naming the first violation of the COCO contract."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: top level must be an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: '{key}' must be a list")
    image_ids = {img.get("id") for img in data["images"]}
    if len(image_ids) != len(data["images"]):
        raise DataError(f"{source}: image ids are not unique")
    cat_ids = {c.get("id") for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{source}: annotation {ann.get('id')} names unknown image "
                            f"{ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise DataError(f"{source}: annotation {ann.get('id')} names unknown category "
                            f"{ann.get('category_id')!r}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(f"{source}: annotation {ann.get('id')} has bbox {bbox!r}, "
                            "expected [x, y, w, h]")


def keypoint_category(data: CocoDict) -> dict[str, Any]:
    """The single category that carries keypoint names (the keypoint task needs exactly one)."""
    cats = [c for c in data["categories"] if c.get("keypoints")]
    if len(cats) != 1:
        names = [c.get("name") for c in cats]
        raise DataError(f"keypoint task needs exactly one category with keypoints, found {names}")
    return cats[0]


def labeled_statistics(data: CocoDict, task: Task) -> LabeledStats:
    """Mean non-crowd instances per image per category, and (keypoints) mean visible
    keypoints per instance: the targets that calibration matches."""
    n_images = len(data["images"])
    if n_images == 0:
        raise DataError("labeled set has no images; statistics are undefined")
    anns = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    if task == "keypoints":
        cat_id = keypoint_category(data)["id"]
        anns = [a for a in anns if a["category_id"] == cat_id
                and _num_visible(a) > 0]
        cats = [cat_id]
    else:
        cats = [c["id"] for c in data["categories"]]
    counts = Counter(a["category_id"] for a in anns)
    per_image = {str(c): counts.get(c, 0) / n_images for c in cats}
    visible = None
    if task == "keypoints":
        visible = sum(_num_visible(a) for a in anns) / len(anns) if anns else 0.0
    return LabeledStats(images=n_images, instances_per_image=per_image,
                        visible_keypoints_per_instance=visible)


def _num_visible(ann: dict[str, Any]) -> int:
    kps = ann.get("keypoints") or []
    return sum(1 for v in kps[2::3] if v > 0)

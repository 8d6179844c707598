"""COCO I/O: reading and checking data sets, their statistics, and the categories,
flip maps and OKS sigmas a model trained on them carries in its card.

Everything here works on any COCO-format keypoint or box data set:
categories, keypoint names and skeletons come from the file, not from code.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from distill.card import LabeledStats, Task, flip_map_from_names
from distill.errors import CardError, DataError
from distill.fileio import read_json

CocoDict = dict[str, Any]

# COCO's per-keypoint OKS sigmas (pycocotools' defaults), by keypoint name.
COCO_SIGMAS: dict[str, float] = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035,
    "right_ear": 0.035, "left_shoulder": 0.079, "right_shoulder": 0.079,
    "left_elbow": 0.072, "right_elbow": 0.072, "left_wrist": 0.062, "right_wrist": 0.062,
    "left_hip": 0.107, "right_hip": 0.107, "left_knee": 0.087, "right_knee": 0.087,
    "left_ankle": 0.089, "right_ankle": 0.089,
}
DEFAULT_SIGMA = 0.07


def load_coco(path: Path) -> CocoDict:
    """Reads and checks a COCO file: the keys, ids and references the project relies on."""
    data = read_json(path, "COCO file")
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


def objects(data: CocoDict) -> list[dict[str, Any]]:
    """The annotations that are objects: crowd and ignore regions (``iscrowd: 1``) left out."""
    return [a for a in data["annotations"] if not a.get("iscrowd", 0)]


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
    anns = objects(data)
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


def training_categories(coco: CocoDict, task: Task) -> list[dict[str, Any]]:
    """The categories a model trained on ``coco`` predicts, in label order.

    Keypoint task: the one category carrying keypoint names. Box task: all
    categories, in the file's order (that order becomes labels 1..C).
    """
    if task == "keypoints":
        return [dict(keypoint_category(coco))]
    cats = [dict(c) for c in coco["categories"]]
    if not cats:
        raise DataError("the COCO file has no categories to train on")
    return cats


def oks_sigmas_for(category: dict[str, Any]) -> list[float]:
    """OKS sigmas of a keypoint category: its own ``oks_sigmas`` / ``sigmas`` field; else
    COCO's, by name, when every keypoint has a COCO name (or positionally when there are
    exactly 17); else a uniform 0.07."""
    names = list(category.get("keypoints", []))
    for key in ("oks_sigmas", "sigmas"):
        if category.get(key) is not None:
            sigmas = [float(s) for s in category[key]]
            if len(sigmas) != len(names):
                raise CardError(f"category {category.get('name')!r} has {len(sigmas)} {key} "
                                f"for {len(names)} keypoints")
            return sigmas
    if names and all(n in COCO_SIGMAS for n in names):
        return [COCO_SIGMAS[n] for n in names]
    if len(names) == 17:
        return list(COCO_SIGMAS.values())
    return [DEFAULT_SIGMA] * len(names)


def flip_map_for(category: dict[str, Any]) -> list[list[int]]:
    """Left/right pairs: an explicit ``flip_map`` of the category (name or index pairs),
    else derived from ``left_`` / ``right_`` names."""
    names = list(category.get("keypoints", []))
    explicit = category.get("flip_map")
    if explicit and all(isinstance(v, int) for pair in explicit for v in pair):
        return [[int(a), int(b)] for a, b in explicit]
    return flip_map_from_names(names, explicit)

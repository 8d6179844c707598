"""What every export renderer relies on: the checked COCO contract and readers of its fields.

Pure Python: no torch, no HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from distill.coco import objects, validate_coco
from distill.errors import DataError


def check_coco(coco: Any) -> None:
    """The COCO contract, plus what the exports rely on: sizes, names, keypoint lengths."""
    validate_coco(coco, source="pseudo-label file")
    for img in coco["images"]:
        relative_path(img)
        for key in ("width", "height"):
            v = img.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise DataError(f"image {img.get('file_name')!r} has {key} {v!r}; "
                                "expected a positive number")
    for c in coco["categories"]:
        if not isinstance(c.get("name"), str) or not c["name"] or "\n" in c["name"]:
            raise DataError(f"category {c.get('id')!r} has name {c.get('name')!r}; "
                            "expected a one-line string")


def relative_path(img: dict[str, Any]) -> PurePosixPath:
    """The image's ``file_name`` as a relative path; a :class:`DataError` for any other."""
    name = img.get("file_name")
    path = PurePosixPath(name) if isinstance(name, str) else None
    if path is None or not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise DataError(f"image {img.get('id')!r} has file_name {name!r}; expected a "
                        "relative path such as 'cam1/0001.png'")
    return path


def images_with_objects(coco: dict[str, Any]
                             ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each image with its objects (crowd and ignore regions left out), in file order."""
    by_image: dict[Any, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in objects(coco):
        by_image[ann["image_id"]].append(ann)
    for img in coco["images"]:
        yield img, by_image[img["id"]]


def box_xywh(ann: dict[str, Any]) -> tuple[float, float, float, float]:
    """The annotation's ``[x, y, w, h]`` as floats."""
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"annotation {ann.get('id')} has bbox {ann['bbox']!r}") from exc
    return x, y, w, h


def instance_score(ann: dict[str, Any]) -> float | None:
    """The instance score, or None when the annotation has none."""
    return as_number(ann.get("score"))


def as_number(v: Any) -> float | None:
    """``v`` as a float when it is a JSON number (not a boolean), else None."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def keypoint_triples(ann: dict[str, Any], k: int) -> list[tuple[float, float, int]] | None:
    """[(x, y, v)] * k, or None when the annotation has no keypoints."""
    kps = ann.get("keypoints")
    if not kps:
        return None
    if len(kps) != 3 * k:
        raise DataError(f"annotation {ann.get('id')} has {len(kps)} keypoint values; its "
                        f"category names {k} keypoints, so expected {3 * k}")
    return [(float(kps[i]), float(kps[i + 1]), int(kps[i + 2])) for i in range(0, 3 * k, 3)]


def category_name(cat: dict[str, Any]) -> str:
    """The category's name (checked to be a one-line string by :func:`check_coco`)."""
    return str(cat["name"])


def keypoint_probability(logit: float) -> float:
    """A keypoint score in [0, 1], as labeling tools expect scores: the sigmoid of its
    heatmap logit (Keypoint R-CNN's, as ``distill.keypoint_scores`` records it),
    monotonic in the logit."""
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, float(logit)))))

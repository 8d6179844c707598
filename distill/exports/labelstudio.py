"""The ``labelstudio`` export: Label Studio tasks with pre-annotations, and their config.

Following "Import pre-annotated data into Label Studio" (https://labelstud.io/guide/predictions)
and the result formats of the RectangleLabels and KeyPointLabels tags
(https://labelstud.io/tags/rectanglelabels, https://labelstud.io/tags/keypointlabels): one
task per image, ``{"data": {"image": URL}, "predictions": [{"model_version", "score",
"result"}]}``; each box a ``rectanglelabels`` result with ``x``, ``y``, ``width``,
``height`` in percent of the image (0-100), ``original_width`` / ``original_height``,
``image_rotation: 0``; each kept keypoint (v > 0) a ``keypointlabels`` result with its
own score (``distill.keypoint_scores``; the instance's where the file has none) whose
``parentID`` is its box's result ``id``, the link Label Studio's own converter reads to
group keypoints into instances (label_studio_sdk/converter/exports/yolo.py). The labeling
config (:func:`labelstudio_config`) names the same ``from_name`` / ``to_name`` and gives
each keypoint label a ``model_index`` (its position in the category), which Label
Studio's COCO / YOLO export of keypoints requires. Ignore regions are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from distill.errors import DataError
from distill.exports._common import (
    as_number,
    box_xywh,
    category_name,
    check_coco,
    images_with_objects,
    instance_score,
    keypoint_triples,
    relative_path,
)

LS_IMAGE, LS_BOXES, LS_KEYPOINTS = "image", "label", "keypoint"  # to_name / from_names
LS_POINT_SIZE = 0.5  # keypoint size in percent of the image, as Label Studio's `width`
LS_LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local storage


@dataclass(frozen=True)
class RegionPlan:
    """How a COCO image's objects become Label Studio regions (result items): the tag
    names, the label value of each category and keypoint (None: not in the config, left
    out), the lowest scores kept and the scale of keypoint scores. The defaults are the
    file export's: the config of :func:`labelstudio_config`, everything kept, keypoint
    scores as the file has them."""

    image: str = LS_IMAGE  # the Image tag's name (to_name)
    boxes: str | None = LS_BOXES  # the RectangleLabels tag's name (from_name); None: none
    keypoints: str | None = LS_KEYPOINTS  # the KeyPointLabels tag's name; None: none
    box_label: Callable[[dict[str, Any]], str | None] = category_name
    point_label: Callable[[dict[str, Any], int, str], str | None] = lambda _c, _j, name: name
    min_score: float = -math.inf  # boxes (and their keypoints) under it are left out
    min_point_score: float = -math.inf  # on the scale point_score gives
    point_score: Callable[[float], float] = float
    point_size: float = LS_POINT_SIZE


def image_regions(img: dict[str, Any], anns: list[dict[str, Any]],
                  cats: dict[Any, dict[str, Any]], plan: RegionPlan = RegionPlan(),
                  prefix: str = "box", first: int = 1
                  ) -> tuple[list[dict[str, Any]], list[float]]:
    """The regions of one image (see the module docstring) and the scores of its kept
    instances: each box a ``rectanglelabels`` region with its score, each kept keypoint
    (v > 0) a ``keypointlabels`` region with its own score whose ``parentID`` is its box
    (no ``parentID`` when the plan has no box tag). The n-th instance's box is region
    ``<prefix><first + n>`` and its keypoints ``<box id>_kp<j>``."""
    size = {"original_width": int(img["width"]), "original_height": int(img["height"]),
            "image_rotation": 0}
    w, h = float(img["width"]), float(img["height"])
    result: list[dict[str, Any]] = []
    scores: list[float] = []
    for n, ann in enumerate(anns, first):
        cat, box_id = cats[ann["category_id"]], f"{prefix}{n}"
        s = instance_score(ann)
        if s is not None and s < plan.min_score:
            continue
        score = {} if s is None else {"score": s}
        label = plan.box_label(cat) if plan.boxes else None
        names = list(cat.get("keypoints") or [])
        points = _points(ann, cat, names, plan) if plan.keypoints else []
        if label is None and not points:
            continue
        if s is not None:
            scores.append(s)
        x, y, bw, bh = box_xywh(ann)
        if label is not None:
            result.append({
                "id": box_id, "type": "rectanglelabels", "from_name": plan.boxes,
                "to_name": plan.image, **size, **score,
                "value": {"x": x / w * 100, "y": y / h * 100, "width": bw / w * 100,
                          "height": bh / h * 100, "rotation": 0, "rectanglelabels": [label]}})
        for j, px, py, point, own in points:
            link = {"parentID": box_id} if label is not None else {}
            result.append({
                "id": f"{box_id}_kp{j}", **link, "type": "keypointlabels",
                "from_name": plan.keypoints, "to_name": plan.image, **size,
                **(score if own is None else {"score": own}),
                "value": {"x": px / w * 100, "y": py / h * 100, "width": plan.point_size,
                          "keypointlabels": [point]}})
    return result, scores


def _points(ann: dict[str, Any], cat: dict[str, Any], names: list[str], plan: RegionPlan
            ) -> list[tuple[int, float, float, str, float | None]]:
    """The kept keypoints of an instance: (index, x, y, label value, own score or None)."""
    own = _keypoint_scores(ann, len(names)) if names else None
    kept = []
    for j, (px, py, v) in enumerate(keypoint_triples(ann, len(names)) or []):
        label = plan.point_label(cat, j, str(names[j]))
        score = None if own is None else plan.point_score(own[j])
        if v > 0 and label is not None and (score is None or score >= plan.min_point_score):
            kept.append((j, px, py, label, score))
    return kept


def prediction(result: list[dict[str, Any]], scores: list[float], version: str
               ) -> dict[str, Any]:
    """One Label Studio prediction: its ``score`` is the mean instance score (0 without
    pseudo-labels, so that sorting by it shows those first)."""
    return {"model_version": version, "score": sum(scores) / len(scores) if scores else 0.0,
            "result": result}


def model_version(coco: dict[str, Any]) -> str:
    """The file's teacher as a Label Studio ``model_version``: its name and checksum."""
    teacher = (coco.get("info") or {}).get("teacher") or {}
    version = str(teacher.get("name") or teacher.get("arch") or "distill")
    if teacher.get("sha256"):
        version += f"@{str(teacher['sha256'])[:12]}"
    return version


def to_labelstudio(coco: dict[str, Any], *,
                   image_url_prefix: str = LS_LOCAL_FILES) -> list[dict[str, Any]]:
    """Label Studio tasks with predictions, one per image (see the module docstring).

    ``data.image`` is ``image_url_prefix`` + the URL-quoted ``file_name``: the default
    serves files from Label Studio's local storage, an ``http(s)://`` prefix serves them
    from a web server.
    """
    check_coco(coco)
    cats = {c["id"]: c for c in coco["categories"]}
    version = model_version(coco)
    return [{"data": {LS_IMAGE: image_url_prefix + quote(relative_path(img).as_posix())},
             "predictions": [prediction(*image_regions(img, anns, cats), version)]}
            for img, anns in images_with_objects(coco)]


def labelstudio_config(coco: dict[str, Any]) -> str:
    """The Label Studio labeling config (XML) matching :func:`to_labelstudio`'s tasks:
    one RectangleLabels label per category, one KeyPointLabels label per keypoint name."""
    check_coco(coco)
    cats = coco["categories"]
    keypoints = list(dict.fromkeys(str(n) for c in cats for n in c.get("keypoints") or []))
    lines = ["<View>", f'  <Image name="{LS_IMAGE}" value="${LS_IMAGE}" zoom="true"/>',
             f'  <RectangleLabels name="{LS_BOXES}" toName="{LS_IMAGE}">',
             *(f'    <Label value="{_xml(category_name(c))}"/>' for c in cats),
             "  </RectangleLabels>"]
    if keypoints:
        lines += [f'  <KeyPointLabels name="{LS_KEYPOINTS}" toName="{LS_IMAGE}">',
                  *(f'    <Label value="{_xml(n)}" model_index="{i}"/>'
                    for i, n in enumerate(keypoints)), "  </KeyPointLabels>"]
    return "\n".join([*lines, "</View>"]) + "\n"


def _keypoint_scores(ann: dict[str, Any], k: int) -> list[float] | None:
    """Each keypoint's own score (``distill.keypoint_scores``), or None when the file has none."""
    extras = ann.get("distill")
    raw = extras.get("keypoint_scores") if isinstance(extras, dict) else None
    if raw is None:
        return None
    scores = [as_number(v) for v in raw] if isinstance(raw, list) and len(raw) == k else []
    if len(scores) != k or None in scores:
        raise DataError(f"annotation {ann.get('id')} has distill.keypoint_scores {raw!r}; "
                        f"expected {k} numbers, one per keypoint")
    return [s for s in scores if s is not None]


def _xml(s: str) -> str:
    return escape(s, {'"': "&quot;", "'": "&apos;"})

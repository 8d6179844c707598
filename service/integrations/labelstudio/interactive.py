"""Interactive pre-annotation: the annotator draws a box (or clicks a person), the teacher
places its keypoints.

With the backend connected for interactive pre-annotations and Auto-Annotation on, a
box drawn with the smart rectangle tool makes Label Studio call ``/predict`` with that
one task and ``params.context.result``: the drawn regions, in percent of the image
(``label_studio/ml/models.py``, ``interactive_annotating``). The answer's first
prediction is shown as a suggestion; accepting (or rejecting) it deletes the drawn
regions, so every drawn box is sent back.

The job carries the drawn boxes (:attr:`jobs.records.StoredFile.boxes`). A Keypoint
R-CNN teacher runs its keypoint head on them, with the interactive preset's passes
(:meth:`distill.tta.keypoints.KeypointTTA.on_boxes`): no detection is needed, and the
box head only scores each box. A teacher that only detects (an ONNX pose model) runs
as for any ``/predict``, and each drawn box takes the keypoints of the detection of its
label (any label when none maps) that overlaps it most, at an intersection over union of
at least :data:`MIN_IOU`, however low its score: the annotator has said an instance is
there, so the job keeps every detection. Either way a box comes back as drawn, with the
keypoints over the keypoint threshold (as always) linked to it; a box that matches no
detection comes back alone.

A click with the smart keypoint tool says "this one": it comes back as the
best-scoring detection whose box holds it, whole (its box and keypoints), or as it was
clicked when no detection holds it (or it was an Alt-click, "not here"). Label Studio
sends one kind of region per call (the drawn regions of one type and label).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from distill.exports._common import box_xywh, images_with_objects
from distill.exports.labelstudio import image_regions, prediction
from jobs.records import JobRequest
from service.integrations.labelstudio.config import LabelingConfig

MIN_IOU = 0.3  # a drawn box and the detection it takes its keypoints from
MAX_DRAWN = 100  # boxes in one interactive call (an annotator draws one at a time)


@dataclass(frozen=True)
class DrawnBox:
    """A box the annotator drew with the smart rectangle tool, in percent of the image
    (``rotation`` in degrees about its top-left corner, as Label Studio has it); or, with
    ``click``, a point clicked with the smart keypoint tool (no width or height;
    ``positive`` False for an Alt-click, which says "not here")."""

    label: str | None
    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0
    click: bool = False
    positive: bool = True


def drawn_boxes(params: Any, config: LabelingConfig) -> list[DrawnBox] | None:
    """The boxes (in the config's box tag) and clicks (in its keypoint tag) of an
    interactive request's context: None for a request without a context (a plain
    ``/predict``), empty when it holds none of them (other regions, unreadable values:
    nothing to answer). Raises ValueError beyond :data:`MAX_DRAWN` of them, and for
    boxes and clicks together (Label Studio sends one kind per call; a Keypoint R-CNN
    teacher would see only the boxes)."""
    context = params.get("context") if isinstance(params, dict) else None
    if context is None:
        return None
    regions = context.get("result") if isinstance(context, dict) else None
    found = [d for d in map(lambda r: _drawn(r, config), regions)
             if d is not None] if isinstance(regions, list) else []
    if len(found) > MAX_DRAWN:
        raise ValueError(f"{len(found)} drawn regions in one interactive call, more than "
                         f"{MAX_DRAWN}")
    if len({d.click for d in found}) > 1:
        raise ValueError("an interactive call has drawn boxes or clicks, not both")
    return found


def _drawn(region: Any, config: LabelingConfig) -> DrawnBox | None:
    """One context region as a drawn box or click; None for anything else."""
    value = region.get("value") if isinstance(region, dict) else None
    if not isinstance(value, dict):
        return None
    kind, tag = region.get("type"), region.get("from_name")
    if kind == "rectanglelabels" and config.boxes is not None and tag == config.boxes.name:
        x, y, w, h, turn = (_number(value.get(k, 0.0 if k == "rotation" else None))
                            for k in ("x", "y", "width", "height", "rotation"))
        if x is None or y is None or w is None or h is None or turn is None or w <= 0 \
                or h <= 0:
            return None
        return DrawnBox(_first(value.get("rectanglelabels")), x, y, w, h, turn)
    if kind == "keypointlabels" and config.keypoints is not None \
            and tag == config.keypoints.name:
        x, y = _number(value.get("x")), _number(value.get("y"))
        if x is None or y is None:
            return None
        return DrawnBox(_first(value.get("keypointlabels")), x, y, 0.0, 0.0, click=True,
                        positive=region.get("is_positive") is not False)
    return None


def _first(labels: Any) -> str | None:
    return labels[0] if isinstance(labels, list) and labels and \
        isinstance(labels[0], str) else None


def _number(v: Any) -> float | None:
    """A JSON number as a finite float (not a boolean, not an overflowing integer)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def fractions(drawn: list[DrawnBox]) -> list[tuple[float, float, float, float]]:
    """The drawn boxes as the job's prompts (:attr:`jobs.records.StoredFile.boxes`):
    (x0, y0, x1, y1) as fractions of the image, clipped to it; boxes left empty by the
    clipping, rotated boxes and clicks are left out (they still come back as drawn)."""
    out = []
    for b in drawn:
        if b.rotation or b.click:
            continue
        x0, y0 = max(0.0, b.x / 100), max(0.0, b.y / 100)
        x1, y1 = min(1.0, (b.x + b.width) / 100), min(1.0, (b.y + b.height) / 100)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    return out


def interactive_request(request: JobRequest) -> JobRequest:
    """The job's request for an interactive call: every instance kept (see above)."""
    return request.model_copy(update={
        "score_threshold": 0.0, "score_thresholds": {}, "min_votes": 0, "thresholds_from":
            f"interactive: drawn boxes choose the instances; {request.thresholds_from or ''}"
            .rstrip("; ")})


def suggestion(coco: dict[str, Any], drawn: list[DrawnBox], config: LabelingConfig,
               version: str) -> dict[str, Any]:
    """The prediction for the job's one image: each drawn box with its keypoints."""
    found = list(images_with_objects(coco))
    img, anns = found[0] if found else (coco["images"][0], [])
    cats = {c["id"]: c for c in coco["categories"]}
    w, h = float(img["width"]), float(img["height"])
    plan = replace(config.plan(int(img["width"])), min_score=-math.inf)
    result: list[dict[str, Any]] = []
    scores: list[float] = []
    for n, box in enumerate(drawn, 1):
        px = (box.x * w / 100, box.y * h / 100, box.width * w / 100, box.height * h / 100)
        if box.click:  # the detection under the click, whole (its box and keypoints)
            ann = _under(px[:2], anns) if box.positive else None
            one = ann
        else:  # the detection's keypoints on the drawn box, under the drawn label
            ann = None if box.rotation else _best_match(px, box.label, anns, cats,
                                                         plan.box_label)
            one = ann and {**ann, "bbox": list(px)}
        if ann is None or one is None:
            result.append(_as_drawn(f"drawn{n}", box, img, config))
            continue
        label = box.label if box.label and not box.click else \
            plan.box_label(cats[ann["category_id"]])
        regions, kept = image_regions(img, [one], cats, replace(plan, box_label=_always(label)),
                                      prefix="drawn", first=n)
        scores += kept
        result += regions
    return prediction(result, scores, version)


def _always(label: str | None) -> Callable[[dict[str, Any]], str | None]:
    return lambda _category: label


def _as_drawn(region_id: str, box: DrawnBox, img: dict[str, Any], config: LabelingConfig
              ) -> dict[str, Any]:
    """A drawn box or click as it was drawn (no detection matched it)."""
    size = {"to_name": config.image, "original_width": int(img["width"]),
            "original_height": int(img["height"]), "image_rotation": 0}
    labels = [box.label] if box.label else []
    if box.click:
        assert config.keypoints is not None  # clicks are read from the keypoint tag
        return {"id": region_id, "type": "keypointlabels", "from_name": config.keypoints.name,
                **size, "value": {"x": box.x, "y": box.y, "keypointlabels": labels}}
    assert config.boxes is not None  # drawn boxes are read from the config's box tag
    return {"id": region_id, "type": "rectanglelabels", "from_name": config.boxes.name,
            **size, "value": {"x": box.x, "y": box.y, "width": box.width,
                              "height": box.height, "rotation": box.rotation,
                              "rectanglelabels": labels}}


def _under(point: tuple[float, float], anns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best-scoring detection whose box holds the point."""
    px, py = point
    inside = [a for a in anns if (b := box_xywh(a))[0] <= px <= b[0] + b[2]
              and b[1] <= py <= b[1] + b[3]]
    return max(inside, key=lambda a: float(a.get("score") or 0.0), default=None)


def _best_match(px: tuple[float, float, float, float], label: str | None,
                anns: list[dict[str, Any]], cats: dict[Any, dict[str, Any]],
                box_label: Any) -> dict[str, Any] | None:
    """The detection overlapping the drawn box most, if it overlaps at least ``MIN_IOU``:
    one of the drawn label's category, or of any when the label is none of the teacher's
    categories' (an unlabeled box, a label the config maps to nothing)."""
    if label is not None and label in {box_label(c) for c in cats.values()}:
        anns = [a for a in anns if box_label(cats[a["category_id"]]) == label]
    best, best_iou = None, MIN_IOU
    for ann in anns:
        iou = _iou(px, box_xywh(ann))
        if iou >= best_iou:
            best, best_iou = ann, iou
    return best


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0

"""Interactive pre-annotation: the annotator draws a box, the teacher places its keypoints.

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
    (``rotation`` in degrees about its top-left corner, as Label Studio has it)."""

    label: str | None
    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0


def drawn_boxes(params: Any, config: LabelingConfig) -> list[DrawnBox] | None:
    """The boxes of an interactive request's context (in the config's box tag); None for
    a request without one (a plain ``/predict``, or a context of other regions: a smart
    keypoint, another tag). Raises ValueError beyond :data:`MAX_DRAWN` boxes."""
    context = params.get("context") if isinstance(params, dict) else None
    regions = context.get("result") if isinstance(context, dict) else None
    if not isinstance(regions, list) or config.boxes is None:
        return None
    found = []
    for region in regions:
        value = region.get("value") if isinstance(region, dict) else None
        if not isinstance(value, dict) or region.get("type") != "rectanglelabels" \
                or region.get("from_name") != config.boxes.name:
            continue
        x, y, w, h, turn = (_number(value.get(k, 0.0 if k == "rotation" else None))
                            for k in ("x", "y", "width", "height", "rotation"))
        if x is None or y is None or w is None or h is None or turn is None or w <= 0 \
                or h <= 0:
            continue
        labels = value.get("rectanglelabels")
        label = labels[0] if isinstance(labels, list) and labels and \
            isinstance(labels[0], str) else None
        found.append(DrawnBox(label, x, y, w, h, turn))
    if len(found) > MAX_DRAWN:
        raise ValueError(f"{len(found)} drawn boxes in one interactive call, more than "
                         f"{MAX_DRAWN}")
    return found or None


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
    clipping, and rotated boxes, are left out (they still come back as drawn)."""
    out = []
    for b in drawn:
        if b.rotation:
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
        ann = None if box.rotation else _best_match(px, box.label, anns, cats,
                                                     plan.box_label)
        if ann is None:
            result.append(_rectangle(f"drawn{n}", box, img, config))
            continue
        # The detection's keypoints on the drawn box, under the drawn label.
        label = box.label or plan.box_label(cats[ann["category_id"]])
        regions, kept = image_regions(img, [{**ann, "bbox": list(px)}], cats, replace(
            plan, box_label=_always(label)))
        scores += kept
        for region in regions:  # "box1" and "box1_kp<j>": unique across the drawn boxes
            region["id"] = region["id"].replace("box1", f"drawn{n}", 1)
            if "parentID" in region:
                region["parentID"] = f"drawn{n}"
        result += regions
    return prediction(result, scores, version)


def _always(label: str | None) -> Callable[[dict[str, Any]], str | None]:
    return lambda _category: label


def _rectangle(region_id: str, box: DrawnBox, img: dict[str, Any], config: LabelingConfig
               ) -> dict[str, Any]:
    """A drawn box as it was drawn (no detection matched it, or it is rotated)."""
    assert config.boxes is not None  # drawn boxes are read from the config's box tag
    return {"id": region_id, "type": "rectanglelabels", "from_name": config.boxes.name,
            "to_name": config.image, "original_width": int(img["width"]),
            "original_height": int(img["height"]), "image_rotation": 0,
            "value": {"x": box.x, "y": box.y, "width": box.width, "height": box.height,
                      "rotation": box.rotation,
                      "rectanglelabels": [box.label] if box.label else []}}


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

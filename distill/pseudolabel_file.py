"""The COCO pseudo-label file (DESIGN section 4) from the kept predictions.

:func:`distill.pseudolabels.finalize` chooses what is kept; this module writes it:
the images and annotations (kept ones, and ignore regions as ``iscrowd: 1``), the
per-instance extras, and the ``info`` block with the thresholds, the per-category
report and the teacher's provenance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from distill.calibrate import IN_FILE, Selection, enough_votes
from distill.card import ModelCard
from distill.predictions import ImageRecord

if TYPE_CHECKING:
    from distill.pseudolabels import RecordSource


def to_coco(records: RecordSource, card: ModelCard, selection: Selection,
            info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Builds the COCO pseudo-label file (DESIGN section 4) from kept predictions.

    Images are numbered 1..N in file-name order (a callable source must yield
    that order; a collection is sorted here); failed images are left out of
    ``images`` and listed under ``info.errors``.
    """
    recs = records() if callable(records) else sorted(records, key=lambda r: r.file_name)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    candidates: Counter[int] = Counter()
    for rec in recs:
        if rec.error is not None:
            errors.append({"file_name": rec.file_name, "error": rec.error})
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": rec.file_name,
                       "width": rec.width, "height": rec.height})
        candidates.update(candidate_categories(rec, selection.min_votes))
        for i, (box, score, cat) in enumerate(zip(rec.boxes, rec.scores, rec.category_ids,
                                                  strict=True)):
            votes = None if rec.votes is None else rec.votes[i]
            status = selection.status(cat, score, votes, file_name=rec.file_name, index=i)
            if status not in IN_FILE:
                continue
            kept = status == "kept"
            x1, y1, x2, y2 = box
            w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
            ann: dict[str, Any] = {
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                "bbox": [x1, y1, round(w, 2), round(h, 2)], "area": round(w * h, 2),
                "iscrowd": 0 if kept else 1, "score": score,
                "segmentation": [],  # boxes only; COCO importers (datumaro, CVAT) require the key
            }
            if rec.keypoints is not None and rec.keypoint_scores is not None:
                if kept:
                    _add_keypoints(ann, rec.keypoints[i], rec.keypoint_scores[i], selection)
                else:  # an ignore region teaches no keypoint
                    ann["keypoints"], ann["num_keypoints"] = [0] * 3 * len(rec.keypoints[i]), 0
            # Per-instance extras (DESIGN section 4): transforms agreeing on this box (out
            # of len(info.transforms)) and their spread, in box sizes; for keypoints each
            # one's score and the spread of its location across transforms; the ignore flag.
            extras: dict[str, Any] = {} if kept else {"ignore": True}
            if rec.votes is not None and rec.spread is not None:
                extras.update(votes=rec.votes[i], spread=rec.spread[i])
            if kept and rec.keypoint_scores is not None:
                extras["keypoint_scores"] = list(rec.keypoint_scores[i])
                if rec.keypoint_spread is not None:
                    extras["keypoint_spread"] = list(rec.keypoint_spread[i])
            if extras:
                ann["distill"] = extras
            annotations.append(ann)
    block = {
        "description": "pseudo-labels by data distillation (Radosavovic et al., CVPR 2018)",
        "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        "teacher": {"arch": card.arch, "task": card.task, **_provenance(card)},
        "thresholds": thresholds_json(selection),
        "categories_report": category_report(card, selection, candidates, annotations,
                                             len(images)),
        "labeled_stats": card.to_dict()["labeled_stats"],  # null: explicit thresholds only
        "num_images": len(images), "num_failed": len(errors), "errors": errors,
        **(info or {}),
    }
    # ``licenses`` is empty but present: datumaro's streaming COCO reader (CVAT's) requires it.
    return {"info": block, "licenses": [], "images": images, "annotations": annotations,
            "categories": card.categories}


def _add_keypoints(ann: dict[str, Any], points: tuple[tuple[float, float], ...],
                   scores: tuple[float, ...], selection: Selection) -> None:
    """Kept keypoints get v=2; dropped ones are written 0,0,0 as COCO does for unlabeled."""
    flat: list[float] = []
    kept = 0
    for (x, y), s in zip(points, scores, strict=True):
        if selection.keypoint_threshold is not None and selection.keeps_keypoint(s):
            flat += [x, y, 2]
            kept += 1
        else:
            flat += [0, 0, 0]
    ann["keypoints"] = flat
    ann["num_keypoints"] = kept


def candidate_categories(rec: ImageRecord, min_votes: int) -> list[int]:
    """The categories of an image's calibration candidates: its predictions enough
    transforms agree on."""
    return [c for i, c in enumerate(rec.category_ids)
            if enough_votes(None if rec.votes is None else rec.votes[i], min_votes)]


def category_report(card: ModelCard, selection: Selection, candidates: Counter[int],
                     annotations: list[dict[str, Any]], num_images: int) -> dict[str, Any]:
    """Per category: the labeled target, the candidates, the kept count and the threshold.

    ``target`` is ``round(labeled instances per image x images)``: ``null`` when the
    labeled statistics lack the category (or are absent), ``0`` when its labeled mean
    is 0; either way a calibrated threshold keeps nothing (``threshold: null``).
    ``shortfall`` marks a category with fewer candidates than its target, which keeps
    only the candidates scoring at least ``SelectionConfig.shortfall_floor`` (with ignore
    regions on, the rest become ignore regions). ``ignored`` counts its ignore
    regions (``iscrowd: 1``) and ``ignore_threshold`` is where they stop (``null``:
    none). For keypoint tasks, ``keypoints`` gives the labeled visible keypoints per
    instance and what was kept.
    """
    stats = card.labeled_stats
    means = {int(k): v for k, v in stats.instances_per_image.items()} if stats else {}
    kept = Counter(int(a["category_id"]) for a in annotations if not a["iscrowd"])
    ignored = Counter(int(a["category_id"]) for a in annotations if a["iscrowd"])
    report: dict[str, Any] = {}
    for cat in card.categories:
        cid = int(cat["id"])
        target = round(means[cid] * num_images) if cid in means else None
        report[str(cid)] = {
            "name": cat.get("name"), "target": target, "candidates": candidates[cid],
            "kept": kept[cid],
            "threshold": json_threshold(selection.score_thresholds.get(cid, math.inf)),
            "shortfall": target is not None and candidates[cid] < target,
            "ignored": ignored[cid], "ignore_threshold": json_threshold(
                selection.ignore_thresholds.get(cid, math.inf))}
    if card.task == "keypoints":
        instances = [a for a in annotations if "num_keypoints" in a and not a["iscrowd"]]
        report["keypoints"] = {
            "target_per_instance": stats.visible_keypoints_per_instance if stats else None,
            "instances": len(instances),
            "kept_per_instance": (sum(a["num_keypoints"] for a in instances) / len(instances)
                                  if instances else None)}
    return report


def json_threshold(value: float | None) -> float | None:
    """A threshold as JSON: infinity (keeps nothing) as null, which JSON lacks."""
    return None if value is None or math.isinf(value) else value


def thresholds_json(selection: Selection) -> dict[str, Any]:
    """The thresholds of ``selection`` as JSON (``info.thresholds``; null keeps nothing)."""
    return {
        "score": {str(c): json_threshold(t) for c, t in selection.score_thresholds.items()},
        "keypoint": json_threshold(selection.keypoint_threshold),
        "ignore": {str(c): json_threshold(t) for c, t in selection.ignore_thresholds.items()},
    }


def _provenance(card: ModelCard) -> dict[str, Any]:
    keep = ("name", "checkpoint", "sha256", "created", "iterations", "train_json")
    return {k: card.provenance[k] for k in keep if k in card.provenance}

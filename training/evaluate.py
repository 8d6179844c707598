"""COCO evaluation of a checkpoint, with or without multi-transform inference.

Box tasks: COCOeval ``bbox``. Keypoint tasks: COCOeval ``keypoints`` with the
card's OKS sigmas as ``kpt_oks_sigmas`` (COCO's 17 sigmas would be wrong for any
other skeleton), plus ``bbox`` for the keypoint category. Predictions carry
contiguous labels, mapped back to COCO category ids through the card; images are
the ground truth's, found by ``file_name`` under the images folder, so the
prediction for each file lands on that file's ground-truth image id.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn
from tqdm import tqdm

from distill.card import ModelCard
from distill.checkpoint import load_checkpoint
from distill.coco import CocoDict, load_coco
from distill.errors import DataError
from distill.images import load_image
from distill.options import DEFAULT_BATCH_SIZE, InferenceOptions
from distill.teachers.interface import Detector
from distill.teachers.registry import load_detector

Predict = Callable[[list[Tensor]], list[dict[str, Tensor]]]

BBOX_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KEYPOINT_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


@dataclass
class EvalReport:
    """Scores per COCOeval type (``bbox``, ``keypoints``), in percent, and the tables."""

    scores: dict[str, dict[str, float]]
    tables: dict[str, str]
    images: int
    detections: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What ``distill eval --out`` writes."""
        return {**self.meta, "scores": self.scores, "images": self.images,
                "detections": self.detections, "seconds": round(self.seconds, 2)}

    @property
    def main(self) -> float:
        """The headline number: keypoint AP for keypoint models, else box AP."""
        return self.scores.get("keypoints", self.scores["bbox"])["AP"]


def predictor_for(model: nn.Module | Detector, card: ModelCard,
                  options: InferenceOptions | None, device: str = "cpu") -> Predict:
    """``options=None``: the model alone; else ``build_predictor`` with those options."""
    from distill.tta.predictor import build_predictor, plain_predictor

    if options is None:
        return plain_predictor(model, card, device)
    return build_predictor(model, card, replace(options, device=device))


def ground_truth_index(coco: CocoDict) -> COCO:
    """pycocotools' index over a copy of ``coco`` with the fields COCOeval reads filled in."""
    data = copy.deepcopy(coco)
    for ann in data["annotations"]:
        _, _, w, h = ann["bbox"]
        ann.setdefault("area", float(w) * float(h))
        ann.setdefault("iscrowd", 0)
        if "keypoints" in ann and "num_keypoints" not in ann:
            ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
    data.setdefault("info", {})
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def to_results(outputs: dict[int, dict[str, Tensor]], card: ModelCard) -> list[dict[str, Any]]:
    """Detections as COCO results (``bbox`` xywh, ``category_id``, ``score``, keypoints)."""
    results: list[dict[str, Any]] = []
    for image_id, out in outputs.items():
        boxes = out["boxes"].tolist()
        labels = out["labels"].tolist()
        scores = out["scores"].tolist()
        kps = out["keypoints"].tolist() if "keypoints" in out else None
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            category = card.category_id(int(labels[i]))
            if category is None:
                continue  # an unused ("N/A") output slot of an imported model
            det: dict[str, Any] = {"image_id": image_id, "category_id": category,
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": scores[i]}
            if kps is not None:
                det["keypoints"] = [v for x, y, _ in kps[i] for v in (x, y, 1.0)]
            results.append(det)
    return results


def run_cocoeval(gt: COCO, results: list[dict[str, Any]], iou_type: str, cat_ids: list[int],
                 sigmas: list[float] | None = None) -> COCOeval:
    """COCOeval of ``results`` against ``gt``, evaluated and accumulated (not summarized).

    An empty result list is evaluated as such (pycocotools' ``loadRes`` cannot take one).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = gt.loadRes(copy.deepcopy(results))
        else:
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories":
                          gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.catIds = cat_ids
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
    return ev


def coco_eval(gt: COCO, results: list[dict[str, Any]], iou_type: str, cat_ids: list[int],
              sigmas: list[float] | None = None) -> tuple[dict[str, float], str]:
    """Runs COCOeval; returns the stats (percent) and the printed table. An empty result
    list scores 0."""
    names = KEYPOINT_STATS if iou_type == "keypoints" else BBOX_STATS
    ev = run_cocoeval(gt, results, iou_type, cat_ids, sigmas)
    with contextlib.redirect_stdout(io.StringIO()) as table:
        ev.summarize()
    # pycocotools reports -1 where a statistic is undefined (no ground truth in that size
    # range); keep it rather than pretend a score of 0.
    stats = {n: round(100.0 * float(v), 2) if v >= 0 else -1.0
             for n, v in zip(names, ev.stats, strict=True)}
    return stats, table.getvalue()


def predict_dataset(predict: Predict, coco: CocoDict, images_dir: Path, *, batch_size: int = 4,
                    progress: bool = False) -> dict[int, dict[str, Tensor]]:
    """Runs ``predict`` on every ground-truth image (by ``file_name``), keyed by image id."""
    items = [(int(img["id"]), Path(images_dir) / str(img["file_name"])) for img in coco["images"]]
    missing = [str(p) for _, p in items if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} images of the ground truth are missing under "
                        f"{str(images_dir)!r}, e.g. {missing[:3]}")
    outputs: dict[int, dict[str, Tensor]] = {}
    with tqdm(total=len(items), unit="img", disable=not progress, desc="evaluating") as bar:
        for i in range(0, len(items), max(1, batch_size)):
            chunk = items[i:i + batch_size]
            preds = predict([load_image(p) for _, p in chunk])
            for (image_id, _), out in zip(chunk, preds, strict=True):
                outputs[image_id] = out
            bar.update(len(chunk))
    return outputs


def evaluate(predict: Predict, card: ModelCard, coco: CocoDict, images_dir: Path, *,
             batch_size: int = 4, progress: bool = False) -> EvalReport:
    """Predicts every image of ``coco`` and scores the predictions against it."""
    t0 = time.perf_counter()
    outputs = predict_dataset(predict, coco, images_dir, batch_size=batch_size,
                              progress=progress)
    results = to_results(outputs, card)
    gt = ground_truth_index(coco)
    own_ids = [int(c["id"]) for c in card.categories]
    cat_ids = [c for c in own_ids if c in gt.cats]
    if not cat_ids:
        raise DataError(f"the ground truth has none of the model's category ids {own_ids}")
    scores, tables = {}, {}
    scores["bbox"], tables["bbox"] = coco_eval(gt, results, "bbox", cat_ids)
    if card.task == "keypoints":
        kp_results = [r for r in results if "keypoints" in r]
        scores["keypoints"], tables["keypoints"] = coco_eval(
            gt, kp_results, "keypoints", cat_ids, sigmas=card.oks_sigmas)
    return EvalReport(scores, tables, images=len(outputs), detections=len(results),
                      seconds=time.perf_counter() - t0)


def evaluate_checkpoint(checkpoint: Path, json_path: Path, images_dir: Path, *,
                        tta: str | None = None, options: InferenceOptions | None = None,
                        device: str = "cpu", batch_size: int | None = None,
                        progress: bool = False) -> EvalReport:
    """``distill eval``: loads a checkpoint, predicts, scores.

    ``tta`` None is the model alone (one pass); a preset runs multi-transform
    inference with ``options`` (fusion, heatmap combine, ...) for the rest.
    """
    card, state, _ = load_checkpoint(checkpoint)
    model = load_detector(card, state)
    run = None if tta is None else replace(options or InferenceOptions(), tta=tta)
    predict = predictor_for(model, card, run, device=device)
    # Evaluation keeps batches of 4 unless told otherwise, so that its numbers stay
    # comparable across runs (the worker's CPU default of 1 image changes them slightly).
    report = evaluate(predict, card, load_coco(json_path), images_dir,
                      batch_size=batch_size or DEFAULT_BATCH_SIZE,
                      progress=progress)
    report.meta = {"model": str(checkpoint), "arch": card.arch, "task": card.task,
                   "json": str(json_path), "images_dir": str(images_dir), "tta": tta}
    return report

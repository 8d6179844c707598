"""How good pseudo-labels are, measured against annotations the teacher never saw.

Only synthetic (or deliberately held-out) data has such annotations: the
unlabeled split of ``distill.data.synth`` keeps its ground truth beside the
images. The experiment reports these numbers to explain its result (a student
can only be as good as what it is taught); nothing is tuned on them.

Pseudo-labels are a thresholded set, so their COCO AP is truncated at the
selection's recall; precision and recall at IoU (boxes) or OKS (keypoints) 0.5
say more directly what the student is taught: how many of the kept instances
are real, and how many real instances were kept.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.card import ModelCard
from distill.coco import CocoDict, load_coco, objects
from distill.errors import DataError
from distill.predictions import PredictionLog
from distill.pseudolabels import SelectionConfig, finalize
from training.evaluate import ground_truth_index, run_cocoeval


def pseudo_label_quality(pseudo: CocoDict, truth: CocoDict, card: ModelCard
                         ) -> dict[str, dict[str, float]]:
    """Scores of a pseudo-label file against the true annotations of the same images.

    Images are matched by ``file_name``. Returns, per COCOeval type (``bbox``, and
    ``keypoints`` for keypoint models), ``AP`` (percent) and ``precision50`` /
    ``recall50`` (fractions) of the kept instances at threshold 0.5.
    """
    ids = {str(img["file_name"]): int(img["id"]) for img in truth["images"]}
    names = {int(img["id"]): str(img["file_name"]) for img in pseudo["images"]}
    unknown = sorted(set(names.values()) - set(ids))
    if unknown:
        raise DataError(f"{len(unknown)} pseudo-labeled images are not in the ground truth, "
                        f"e.g. {unknown[:3]}")
    results = [{**a, "image_id": ids[names[int(a["image_id"])]]}
               for a in objects(pseudo)]
    gt = ground_truth_index(truth)
    cat_ids = [int(c["id"]) for c in card.categories if int(c["id"]) in gt.cats]
    types = ["bbox"] + (["keypoints"] if card.task == "keypoints" else [])
    out: dict[str, dict[str, float]] = {}
    for iou_type in types:
        subset = results if iou_type == "bbox" else [r for r in results if "keypoints" in r]
        ev = run_cocoeval(gt, subset, iou_type, cat_ids,
                          card.oks_sigmas if iou_type == "keypoints" else None)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.summarize()
        precision, recall = _precision_recall_at_05(ev)
        out[iou_type] = {"AP": round(100.0 * max(float(ev.stats[0]), 0.0), 2),
                         "precision50": round(precision, 4), "recall50": round(recall, 4)}
    return out


def raw_and_kept_ap(pseudo: Path, truth_json: Path, card: ModelCard
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """AP per COCOeval type of every ensembled prediction (the run's prediction log, as
    ``distill annotate`` writes it beside ``pseudo``) and of the selected file itself."""
    truth = load_coco(truth_json)
    kept = pseudo_label_quality(json.loads(Path(pseudo).read_text()), truth, card)
    records = PredictionLog(Path(str(pseudo) + ".predictions.jsonl")).read()
    everything = finalize(records.values(), card, SelectionConfig(
        score_threshold=-1.0, keypoint_threshold=-1e9))
    raw = pseudo_label_quality(everything, truth, card)
    return ({k: v["AP"] for k, v in raw.items()}, {k: v["AP"] for k, v in kept.items()})


def _precision_recall_at_05(ev: Any) -> tuple[float, float]:
    """Matched / kept detections and matched / annotated instances at the first
    threshold (0.5), over all areas, ignoring what COCOeval ignores (crowds)."""
    all_areas = ev.params.areaRng[0]
    kept = matched_dt = annotated = matched_gt = 0
    for e in ev.evalImgs:
        if e is None or e["aRng"] != all_areas:
            continue
        dt_ok = ~np.asarray(e["dtIgnore"], dtype=bool)[0]
        kept += int(dt_ok.sum())
        matched_dt += int((np.asarray(e["dtMatches"])[0] > 0)[dt_ok].sum())
        gt_ok = ~np.asarray(e["gtIgnore"], dtype=bool)
        annotated += int(gt_ok.sum())
        matched_gt += int((np.asarray(e["gtMatches"])[0] > 0)[gt_ok].sum())
    return (matched_dt / kept if kept else 0.0, matched_gt / annotated if annotated else 0.0)

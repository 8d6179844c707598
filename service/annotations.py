"""COCO files for a job or a dataset, re-selected from the stored raw predictions.

The worker writes each job's calibrated file; other thresholds, and a
dataset's file calibrated over all of its jobs, are computed here from the
prediction logs and the teacher card each job ran with (``card.json``), with
no inference and no torch.
"""

from __future__ import annotations

import math
from typing import Any

from distill.card import ModelCard
from distill.errors import DistillError
from distill.predictions import ImageRecord, PredictionLog
from distill.pseudolabels import SelectionConfig, finalize
from jobs.records import JobRecord, SavedSelection
from jobs.store import JobStore


class NotAvailableError(DistillError):
    """The stored artifacts cannot give the asked-for file (say why)."""


def selection_for(record: JobRecord, score_thresh: float | None,
                  keypoint_thresh: float | None, saved: SavedSelection | None = None
                  ) -> tuple[SelectionConfig, str]:
    """Which thresholds a download uses, and a word saying so: thresholds asked for in
    the query (``query``), else the reviewer's saved selection (``saved``), else the
    job's own explicit ones or calibration (``job``)."""
    request = record.request
    if score_thresh is not None or keypoint_thresh is not None or saved is None:
        source = "job" if score_thresh is None and keypoint_thresh is None else "query"
        score = score_thresh if score_thresh is not None else request.score_thresh
        return SelectionConfig(
            score_threshold=score,
            keypoint_threshold=(keypoint_thresh if keypoint_thresh is not None
                                else request.keypoint_thresh),
            min_votes=request.min_votes, ignore_factor=request.ignore_factor), source
    per_category = {int(k): (math.inf if v is None else v)
                    for k, v in saved.score_thresholds.items()}
    return SelectionConfig(category_thresholds=per_category,
                           keypoint_threshold=saved.keypoint_threshold,
                           min_votes=request.min_votes, ignore_factor=request.ignore_factor
                           ), "saved"


def build_coco(store: JobStore, records: list[JobRecord], score_thresh: float | None,
               keypoint_thresh: float | None, saved: SavedSelection | None = None
               ) -> dict[str, Any]:
    """Calibrates over every image of ``records`` (finished jobs, oldest first) and builds COCO.

    A saved selection's excluded images are left out (and listed in ``info``). All
    jobs must have run with the same teacher checkpoint. Names are unique per
    content within a dataset (a clash was renamed at upload), so a name that
    several jobs share is the same image re-sent: it is kept once, from the
    oldest job. ``info.renamed`` lists the uploads that were renamed.
    """
    if not records:
        raise NotAvailableError("no finished jobs to build annotations from")
    first = store.load_card(records[0].id)
    if first is None:
        raise NotAvailableError(f"job {records[0].id} has no teacher card stored")
    sha = _sha256(first)
    by_name: dict[str, ImageRecord] = {}
    for record in records:
        ran = store.load_card(record.id)
        if ran is None or _sha256(ran) != sha:
            raise NotAvailableError(
                f"job {record.id} ran with teacher {record.teacher or '?'!r} "
                f"({(_sha256(ran) if ran else 'unknown')[:12]}...), job {records[0].id} "
                f"with teacher {records[0].teacher or '?'!r} ({sha[:12]}...): pseudo-labels of "
                "different teachers cannot be calibrated together; download them per job")
        names = {f.name for f in record.files}
        for name, rec in PredictionLog(store.log_path(record.id)).read().items():
            if name in names and name not in by_name:
                by_name[name] = rec
    card = ModelCard.from_dict(first["card"])
    selection, source = selection_for(records[0], score_thresh, keypoint_thresh, saved)
    excluded = set(saved.excluded) if saved is not None and source == "saved" else set()
    info = {**first["info"], "teacher_name": records[0].teacher, "jobs": [r.id for r in records],
            "renamed": [{**r.model_dump(), "job": rec.id} for rec in records
                        for r in rec.renamed],
            "selection_source": source, "excluded": sorted(excluded & set(by_name))}
    kept = [rec for name, rec in by_name.items() if name not in excluded]
    return finalize(kept, card, selection, info)


def _sha256(saved: dict[str, Any]) -> str:
    return str(saved["card"].get("provenance", {}).get("sha256") or "unknown")

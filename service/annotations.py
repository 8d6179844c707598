"""COCO files for a job or a dataset, re-selected from the stored raw predictions.

The worker writes each job's calibrated file; other thresholds, and a
dataset's file calibrated over all of its jobs, are computed here from the
prediction logs and the teacher card each job ran with (``card.json``), with
no inference and no torch.
"""

from __future__ import annotations

from typing import Any

from distill.card import ModelCard
from distill.errors import DistillError
from distill.predictions import ImageRecord, PredictionLog
from distill.pseudolabels import SelectionConfig, finalize
from jobs.store import JobRecord, JobStore


class NotAvailableError(DistillError):
    """The stored artifacts cannot give the asked-for file (say why)."""


def selection_for(record: JobRecord, score_thresh: float | None,
                  keypoint_thresh: float | None) -> SelectionConfig:
    """The thresholds asked for now, else the job's own explicit ones, else calibration."""
    request = record.request
    return SelectionConfig(
        score_threshold=score_thresh if score_thresh is not None else request.score_thresh,
        keypoint_threshold=(keypoint_thresh if keypoint_thresh is not None
                            else request.keypoint_thresh))


def build_coco(store: JobStore, records: list[JobRecord], score_thresh: float | None,
               keypoint_thresh: float | None) -> dict[str, Any]:
    """Calibrates over every image of ``records`` (finished jobs, oldest first) and builds COCO.

    All jobs must have run with the same teacher checkpoint. A file name that
    several jobs share is kept once, from the oldest job: a resubmitted batch
    adds no duplicate image.
    """
    if not records:
        raise NotAvailableError("no finished jobs to build annotations from")
    first = store.load_card(records[0].id)
    if first is None:
        raise NotAvailableError(f"job {records[0].id} has no teacher card stored")
    sha = _sha256(first)
    by_name: dict[str, ImageRecord] = {}
    for record in records:
        saved = store.load_card(record.id)
        if saved is None or _sha256(saved) != sha:
            raise NotAvailableError(
                f"job {record.id} ran with teacher {record.teacher or '?'!r} "
                f"({(_sha256(saved) if saved else 'unknown')[:12]}...), job {records[0].id} "
                f"with teacher {records[0].teacher or '?'!r} ({sha[:12]}...): pseudo-labels of "
                "different teachers cannot be calibrated together; download them per job")
        names = {f.name for f in record.files}
        for name, rec in PredictionLog(store.log_path(record.id)).read().items():
            if name in names and name not in by_name:
                by_name[name] = rec
    card = ModelCard.from_dict(first["card"])
    info = {**first["info"], "teacher_name": records[0].teacher, "jobs": [r.id for r in records]}
    return finalize(list(by_name.values()), card,
                    selection_for(records[0], score_thresh, keypoint_thresh), info)


def _sha256(saved: dict[str, Any]) -> str:
    return str(saved["card"].get("provenance", {}).get("sha256") or "unknown")

"""COCO files for a job or a dataset, re-selected from the stored raw predictions.

The worker writes each job's calibrated file; other thresholds, and a
dataset's file calibrated over all of its jobs, are computed here from the
prediction logs and the teacher card the jobs ran with, without inference.
"""

from __future__ import annotations

from typing import Any

from distill.errors import DistillError
from worker.store import JobRecord, JobStore


class NotAvailableError(DistillError):
    """The stored artifacts cannot give the asked-for file (say why)."""


def build_coco(store: JobStore, records: list[JobRecord], score_thresh: float | None,
               keypoint_thresh: float | None) -> dict[str, Any]:
    """Calibrates over every image of ``records`` (finished jobs, oldest first) and builds COCO.

    Thresholds left None fall back to the first job's explicit ones, then to
    calibration. A file name that several jobs share is kept once, from the
    oldest job: a resubmitted batch adds no duplicate image.
    """
    from distill.annotate import finalize
    from distill.card import ModelCard
    from distill.predictions import PredictionLog
    from distill.pseudolabels import SelectionConfig

    if not records:
        raise NotAvailableError("no finished jobs to build annotations from")
    first = store.load_card(records[0].id)
    if first is None:
        raise NotAvailableError(f"job {records[0].id} has no teacher card stored")
    sha = first["card"].get("provenance", {}).get("sha256")
    by_name: dict[str, Any] = {}
    for record in records:
        saved = store.load_card(record.id)
        if saved is None or saved["card"].get("provenance", {}).get("sha256") != sha:
            raise NotAvailableError(f"job {record.id} ran with another teacher than job "
                               f"{records[0].id}; their predictions cannot be calibrated together")
        names = {f.name for f in record.files}
        for name, rec in PredictionLog(store.log_path(record.id)).read().items():
            if name in names and name not in by_name:
                by_name[name] = rec
    request = records[0].request
    selection = SelectionConfig(
        score_threshold=score_thresh if score_thresh is not None else request.score_thresh,
        keypoint_threshold=(keypoint_thresh if keypoint_thresh is not None
                            else request.keypoint_thresh))
    card = ModelCard.from_dict(first["card"])
    info = {**first["info"], "jobs": [r.id for r in records]}
    return finalize(list(by_name.values()), card, selection, info)

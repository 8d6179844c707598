"""COCO files for a job or a dataset, re-selected from the stored raw predictions.

The worker writes each job's calibrated file; other thresholds, a reviewer's saved
selection, and a dataset's file calibrated over all of its jobs are computed here from
the prediction logs and the teacher card each job ran with (``card.json``), with no
inference and no torch. The selection comes from :func:`jobs.selection.selection_for`,
the rule the worker and the review document use too. Workers write a finished
dataset's file with it once (:mod:`jobs.datasets`); the API re-selects with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.card import ModelCard
from distill.errors import DistillError
from distill.predictions import ImageRecord
from distill.pseudolabels import SelectionConfig, finalize
from jobs.records import JobRecord, SavedSelection
from jobs.selection import SelectionQuery, SelectionSource, selection_for
from jobs.store import JobStore


class NotAvailableError(DistillError):
    """The stored artifacts cannot give the asked-for file (say why)."""


@dataclass
class Predictions:
    """The raw predictions of finished jobs that share one teacher checkpoint."""

    card: ModelCard
    info: dict[str, Any]  # the first job's teacher and inference info
    by_name: dict[str, ImageRecord]  # file name -> its record, from the oldest job sending it
    jobs: dict[str, str]  # file name -> the job whose record it is


def collect(store: JobStore, records: list[JobRecord]) -> Predictions:
    """Reads the prediction logs of ``records`` (finished jobs, oldest first) once.

    All jobs must have run with the same teacher checkpoint. Names are unique per
    content within a dataset (a clash was renamed at upload), so a name that several
    jobs share is the same image re-sent: it is kept once, from the oldest job.
    """
    if not records:
        raise NotAvailableError("no finished jobs to build annotations from")
    first = store.load_card(records[0].id)
    if first is None:
        raise NotAvailableError(f"job {records[0].id} has no teacher card stored")
    sha = _sha256(first)
    by_name: dict[str, ImageRecord] = {}
    jobs: dict[str, str] = {}
    for record in records:
        ran = store.load_card(record.id)
        if ran is None or _sha256(ran) != sha:
            raise NotAvailableError(
                f"job {record.id} ran with teacher {record.teacher or '?'!r} "
                f"({(_sha256(ran) if ran else 'unknown')[:12]}...), job {records[0].id} "
                f"with teacher {records[0].teacher or '?'!r} ({sha[:12]}...): pseudo-labels of "
                "different teachers cannot be calibrated together; review and download "
                "them per job")
        names = {f.name for f in record.files}
        for name, rec in store.read_predictions(record.id).items():
            if name in names and name not in by_name:
                by_name[name], jobs[name] = rec, record.id
    return Predictions(ModelCard.from_dict(first["card"]), first["info"], by_name, jobs)


def resolve(records: list[JobRecord], query: SelectionQuery | None,
            saved: SavedSelection | None) -> tuple[SelectionConfig, SelectionSource]:
    """The selection a download of ``records`` uses (the oldest job's request)."""
    return selection_for(records[0].request, query, saved)


def build_coco(store: JobStore, records: list[JobRecord], query: SelectionQuery | None = None,
               saved: SavedSelection | None = None) -> dict[str, Any]:
    """Calibrates over every image of ``records`` (finished jobs, oldest first) and builds
    COCO with the selection of :func:`resolve`. ``info.selection_source`` says which;
    a saved selection's excluded images are left out and listed in ``info.excluded``;
    ``info.renamed`` lists the uploads that were renamed."""
    preds = collect(store, records)
    selection, source = resolve(records, query, saved)
    info = {**preds.info, "teacher_name": records[0].teacher, "jobs": [r.id for r in records],
            "renamed": [{**r.model_dump(), "job": rec.id} for rec in records
                        for r in rec.renamed],
            "selection_source": source,
            "excluded": sorted(selection.excluded & set(preds.by_name))}
    return finalize(list(preds.by_name.values()), preds.card, selection, info)


def _sha256(saved: dict[str, Any]) -> str:
    return str(saved["card"].get("provenance", {}).get("sha256") or "unknown")

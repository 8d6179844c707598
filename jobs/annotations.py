"""COCO files for a job or a dataset, re-selected from the stored raw predictions.

The worker writes each job's calibrated file; other thresholds, a reviewer's saved
selection, and a dataset's file calibrated over all of its jobs are computed here from
the prediction logs and the teacher card each job ran with (``card.json``), with no
inference and no torch. The selection comes from :func:`jobs.selection.selection_for`,
the rule the worker and the review document use too. Workers write a finished
dataset's file with it once (:mod:`jobs.datasets`); the API re-selects with it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
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
    """The records :func:`spooled` chooses, read into memory (for comparisons: files and
    review documents are built from the spooled records)."""
    with spooled(store, records) as spool:
        by_name = {rec.file_name: rec for rec in spool.passes()}
        return Predictions(ModelCard.from_dict(spool.stored["card"]), spool.stored["info"],
                           by_name, dict(spool.jobs))


@dataclass(frozen=True)
class Spooled:
    """Records spooled by :func:`spooled`."""

    stored: dict[str, Any]  # the oldest job's card.json: its card and inference info
    names: Collection[str]  # the file names, in the order the records come
    jobs: Mapping[str, str]  # file name -> the job its record is kept from
    passes: Callable[[], Iterator[ImageRecord]]  # each call: a fresh pass over the records


@contextmanager
def spooled(store: JobStore, records: list[JobRecord]) -> Iterator[Spooled]:
    """The records of ``records`` (finished jobs, oldest first, one teacher checkpoint),
    for as many passes as needed. Names are unique per content within a dataset (a clash
    was renamed at upload), so a name that several jobs share is the same image re-sent:
    it is kept once, from the oldest job; within a job a later line wins. The logs are
    read once, their chosen lines copied to a local temporary file; a pass reads them
    back one at a time, so memory holds an offset per image, not the records (a
    100,000-image dataset's candidates would not fit an API's or a worker's memory)."""
    first = _same_teacher(store, records)
    offsets: dict[str, int] = {}  # file name -> its chosen line in the spool
    owner: dict[str, str] = {}  # file name -> the job it is kept from
    with tempfile.TemporaryFile(prefix="distill-spool-") as spool:
        end = 0
        for record in records:
            names = {f.name for f in record.files}
            for rec, line in store.iter_predictions(record.id):
                name = rec.file_name
                if name not in names or owner.setdefault(name, record.id) != record.id:
                    continue
                spool.write(line)
                offsets[name], end = end, end + len(line)  # a later line of a job wins

        def passes() -> Iterator[ImageRecord]:
            for offset in offsets.values():
                spool.seek(offset)  # every read seeks: two passes may interleave
                yield ImageRecord.from_json(json.loads(spool.readline()))

        yield Spooled(first, offsets.keys(), owner, passes)


def _same_teacher(store: JobStore, records: list[JobRecord]) -> dict[str, Any]:
    """The oldest job's stored card, once every job is known to have run with its
    checkpoint (else NotAvailableError, which says what to do)."""
    if not records:
        raise NotAvailableError("no finished jobs to build annotations from")
    first = store.load_card(records[0].id)
    if first is None:
        raise NotAvailableError(f"job {records[0].id} has no teacher card stored")
    sha = _sha256(first)
    for record in records[1:]:
        ran = store.load_card(record.id)
        if ran is None or _sha256(ran) != sha:
            raise NotAvailableError(
                f"job {record.id} ran with teacher {record.teacher or '?'!r} "
                f"({(_sha256(ran) if ran else 'unknown')[:12]}...), job {records[0].id} "
                f"with teacher {records[0].teacher or '?'!r} ({sha[:12]}...): pseudo-labels of "
                "different teachers cannot be calibrated together; review and download "
                "them per job")
    return first


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
    selection, source = resolve(records, query, saved)
    with spooled(store, records) as spool:
        info = {**spool.stored["info"], "teacher_name": records[0].teacher,
                "jobs": [r.id for r in records],
                "renamed": [{**r.model_dump(), "job": rec.id} for rec in records
                            for r in rec.renamed],
                "selection_source": source,
                "excluded": sorted(selection.excluded & set(spool.names))}
        return finalize(spool.passes, ModelCard.from_dict(spool.stored["card"]), selection,
                        info)


def _sha256(saved: dict[str, Any]) -> str:
    return str(saved["card"].get("provenance", {}).get("sha256") or "unknown")

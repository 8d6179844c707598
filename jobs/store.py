"""The artifact store: one folder per job under ``jobs/<id>/``, in a :mod:`jobs.storage`
backend (a local directory, the default, or an S3-compatible bucket).

Layout (keys; on a local directory, files under ``DATA``)::

    jobs/<id>/job.json          the request (owner hash, dataset, teacher, files, options); API
    jobs/<id>/state.json        progress and outcome; written by the worker running the job
    jobs/<id>/card.json         the teacher card and inference info the job ran with (worker)
    jobs/<id>/images/           uploads under their content hash (<sha256>.img)
    jobs/<id>/predictions.jsonl raw ensembled predictions, one line per image (worker)
    jobs/<id>/predictions/      on a bucket: one numbered part per finished batch, folded
                                into predictions.jsonl when the job ends (jobs.predlog)
    jobs/<id>/annotations.json  the calibrated COCO output (worker)
    jobs/<id>/selection.json    a reviewer's thresholds and exclusions, when saved (API)
    jobs/<id>/thumbs/           review thumbnails, made once on first request (API)

Beside ``jobs/``, ``index/<owner>/all/`` and ``index/<owner>/datasets/<name>/``
hold one empty object per job, named ``<created>-<id>``, so that listing a key's
jobs (newest first, paged with a cursor) or a dataset's reads only those jobs.
The API writes them when it commits a job and removes them with it.
``index/<owner>/datasets/<name>.selection.json`` is a dataset's saved selection
and ``datasets/<owner>/<name>/`` its plans and its COCO file (:mod:`jobs.datasets`).

Each object has a single writer, so nothing needs a lock: the API never writes
``state.json`` and a worker never writes ``job.json``. Every write is atomic; a new
job's folder is built under a temporary name and renamed into place on a local
directory, and on a bucket ``job.json`` is written last, so readers never see half
a job.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from distill.errors import DistillError
from distill.predictions import ImageRecord, parse_records
from jobs.records import JobRecord, JobState, SavedSelection, utcnow
from jobs.storage import LocalStorage, Storage, join

log = logging.getLogger(__name__)
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # owners (hashes), datasets
_Model = TypeVar("_Model", bound=BaseModel)
LOG = "predictions.jsonl"
PARTS = "predictions"


class StoreError(DistillError):
    """Something the store cannot do with what it was given or found."""


class MalformedIdError(StoreError):
    """A job id, owner or dataset name that could name another path: refused unread."""


class DamagedRecordError(StoreError):
    """A stored JSON file that does not parse as its record (damaged or foreign)."""


def check_name(owner: str, dataset: str | None = None) -> None:
    """Raises MalformedIdError unless the owner (and dataset) can be part of a key."""
    if not _SAFE_KEY.match(owner) or (dataset is not None and not _SAFE_KEY.match(dataset)):
        raise MalformedIdError(f"malformed owner or dataset {owner!r}, {dataset!r}")


def index_entry(created_at: datetime, job_id: str) -> str:
    """A job's name in the owner's index: its creation time then its id, so that the
    names sort by age (the listing reads them newest first)."""
    return f"{created_at.strftime('%Y%m%dT%H%M%S%f')}-{job_id}"


class JobStore:
    """Objects of every job; safe to share between processes and machines."""

    def __init__(self, storage: Storage | Path) -> None:
        self.storage = storage if isinstance(storage, Storage) else LocalStorage(Path(storage))
        if (jobs := self.storage.local_path("jobs")) is not None:
            jobs.mkdir(parents=True, exist_ok=True)  # the layout a local directory always had

    # -- keys -------------------------------------------------------------------------
    def job_key(self, job_id: str, *names: str) -> str:
        """The key of a job's folder (or of ``names`` in it); the id is checked so that it
        can never name another job's objects."""
        if not JOB_ID_RE.match(job_id):
            raise MalformedIdError(f"malformed job id {job_id!r}")
        return join("jobs", job_id, *names)

    def image_key(self, job_id: str, stored: str) -> str:
        """The key of one uploaded image of a job."""
        return self.job_key(job_id, "images", stored)

    def annotations_key(self, job_id: str) -> str:
        """The job's calibrated COCO output."""
        return self.job_key(job_id, "annotations.json")

    # -- creating ---------------------------------------------------------------------
    def staging(self, job_id: str) -> str:
        """A private folder to build a new job in; :meth:`commit` publishes it."""
        return self.storage.staging(self.job_key(job_id))

    def put_staged(self, staging: str, name: str, data: bytes | IO[bytes]) -> None:
        """Stores one object (``images/<sha>.img``) of a job being built."""
        self.storage.put(join(staging, name), data)

    def commit(self, staging: str, record: JobRecord) -> None:
        """Writes ``job.json`` into a staged job (last: it makes the job exist) and
        publishes it, then indexes it."""
        self.storage.put(join(staging, "job.json"), _dump(record))
        self.storage.publish(staging, self.job_key(record.id))
        for key in self._index_keys(record):
            self.storage.put(key, b"")

    def discard(self, staging: str) -> None:
        """Removes a staged job that was not accepted."""
        self.storage.delete_tree(staging)

    # -- reading and updating ---------------------------------------------------------
    def load_job(self, job_id: str) -> JobRecord | None:
        """The job record, or None when there is no such job."""
        try:
            return self._load(self.job_key(job_id, "job.json"), JobRecord)
        except MalformedIdError:
            return None

    def save_job(self, record: JobRecord) -> None:
        """Rewrites ``job.json`` (the API's file)."""
        self.storage.put(self.job_key(record.id, "job.json"), _dump(record))

    def load_state(self, job_id: str) -> JobState | None:
        """The worker's state of the job, None before a worker started it."""
        try:
            return self._load(self.job_key(job_id, "state.json"), JobState)
        except MalformedIdError:
            return None

    def save_state(self, job_id: str, state: JobState) -> None:
        """Rewrites ``state.json`` (the worker's file)."""
        state.updated_at = utcnow()
        self.storage.put(self.job_key(job_id, "state.json"), _dump(state))

    def load_card(self, job_id: str) -> dict[str, Any] | None:
        """``{"card": ..., "info": ...}`` as the worker saved them, or None."""
        data = self.storage.get(self.job_key(job_id, "card.json"))
        try:
            return None if data is None else dict(json.loads(data))
        except (json.JSONDecodeError, TypeError, ValueError):
            return None

    def save_json(self, key: str, data: Any) -> None:
        """Writes JSON under ``key`` (NaN and infinity refused: they are not JSON)."""
        self.storage.put(key, json.dumps(data, allow_nan=False).encode("utf-8"))

    def load_selection(self, owner: str, *, job_id: str | None = None,
                       dataset: str | None = None) -> SavedSelection | None:
        """The saved review selection of a job or of an owner's dataset, if any."""
        try:
            return self._load(self._selection_key(owner, job_id, dataset), SavedSelection)
        except DamagedRecordError as exc:
            log.error("ignoring a damaged selection: %s", exc)
            return None

    def save_selection(self, owner: str, selection: SavedSelection, *, job_id: str | None = None,
                       dataset: str | None = None) -> None:
        """Stores a review selection (the API's file); downloads apply it from now on."""
        selection.saved_at = utcnow()
        self.storage.put(self._selection_key(owner, job_id, dataset), _dump(selection))

    def _selection_key(self, owner: str, job_id: str | None, dataset: str | None) -> str:
        if job_id is not None:
            return self.job_key(job_id, "selection.json")
        check_name(owner, dataset)
        return join("index", owner, "datasets", f"{dataset}.selection.json")

    def read_predictions(self, job_id: str) -> dict[str, ImageRecord]:
        """The job's raw predictions by file name (later records win)."""
        return {rec.file_name: rec for rec, _ in self.iter_predictions(job_id)}

    def iter_predictions(self, job_id: str) -> Iterator[tuple[ImageRecord, bytes]]:
        """The job's raw records with their log lines, in the order written: its log,
        then any parts not yet folded into it, each read a piece at a time (a torn last
        line of each ends it)."""
        for key in self.log_keys(job_id):
            chunks = self.storage.chunks(key)
            if chunks is not None:
                yield from parse_records(_lines(chunks))

    def log_keys(self, job_id: str) -> list[str]:
        """The keys of a job's prediction log, in the order they were written."""
        parts = [self.job_key(job_id, PARTS, n) for n in self.storage.children(
            self.job_key(job_id, PARTS)) if n.endswith(".jsonl")]
        return [self.job_key(job_id, LOG), *parts]

    def list_owner_jobs(self, owner: str, *, dataset: str | None = None,
                        after: str | None = None, skip: Callable[[str], bool] | None = None
                        ) -> Iterator[tuple[str, JobRecord]]:
        """A key's jobs (or one dataset's), newest first, with each one's cursor.

        ``after`` is a cursor from an earlier page: the listing resumes after it.
        Reads only the index and the listed jobs' records; ``skip(job_id)`` True leaves a
        job out unread (what the caller knows it does not want).
        """
        for entry in reversed(self.storage.children(self._index_folder(owner, dataset))):
            if after is not None and entry >= after:
                continue
            job_id = entry.rsplit("-", 1)[-1]
            if skip is not None and skip(job_id):
                continue
            record = self._load_listed(job_id)
            if record is not None and record.owner == owner:
                yield entry, record

    def list_owner_datasets(self, owner: str) -> list[str]:
        """The names of a key's datasets that hold at least one job, sorted."""
        check_name(owner, None)
        folder = join("index", owner, "datasets")
        return [name for name in self.storage.children(folder)
                if self.storage.children(join(folder, name))]

    def index_ids(self, owner: str, dataset: str | None = None) -> list[str]:
        """The ids of a key's jobs (or one dataset's) from the index alone, newest first."""
        return [entry.rsplit("-", 1)[-1] for entry in
                reversed(self.storage.children(self._index_folder(owner, dataset)))]

    def reindex(self) -> int:
        """Adds the index entries of jobs that lack them (jobs written before the index
        existed, only ever in a local directory); returns how many."""
        if not isinstance(self.storage, LocalStorage):
            return 0
        added = 0
        for record in self.list_jobs():
            for key in self._index_keys(record):
                if not self.storage.exists(key):
                    self.storage.put(key, b"")
                    added += 1
        return added

    def job_ids(self) -> list[str]:
        """The ids of every job folder (staging and deleted ones left out)."""
        return [n for n in self.storage.children("jobs") if JOB_ID_RE.match(n)]

    def list_jobs(self, ids: Iterable[str] | None = None) -> Iterator[JobRecord]:
        """Every committed job (or those of ``ids`` that exist), oldest first (a full scan:
        for maintenance, not requests)."""
        ids = self.job_ids() if ids is None else ids
        records = [r for r in map(self._load_listed, ids) if r is not None]
        yield from sorted(records, key=lambda r: (r.created_at, r.id))

    # -- deleting ---------------------------------------------------------------------
    def delete_artifacts(self, job_id: str) -> None:
        """Removes images, predictions and outputs, keeping job.json and state.json."""
        for folder in ("images", PARTS, "thumbs"):
            self.storage.delete_tree(self.job_key(job_id, folder))
        for name in (LOG, "annotations.json", "card.json"):
            self.storage.delete(self.job_key(job_id, name))

    def delete_job(self, job_id: str) -> None:
        """Removes the whole job folder and its index entries."""
        record = self.load_job(job_id)
        if record is not None:
            for key in self._index_keys(record):
                self.storage.delete(key)
        # job.json first: a half-deleted job is never listed.
        self.storage.delete(self.job_key(job_id, "job.json"))
        self.storage.delete_tree(self.job_key(job_id))

    # -- the index ------------------------------------------------------------------------
    def _index_folder(self, owner: str, dataset: str | None) -> str:
        check_name(owner, dataset)
        return join("index", owner, "all") if dataset is None \
            else join("index", owner, "datasets", dataset)

    def _index_keys(self, record: JobRecord) -> list[str]:
        entry = index_entry(record.created_at, record.id)
        folders = [self._index_folder(record.owner, None)]
        if record.dataset is not None:
            folders.append(self._index_folder(record.owner, record.dataset))
        return [join(folder, entry) for folder in folders]

    def _load_listed(self, job_id: str) -> JobRecord | None:
        try:
            return self.load_job(job_id)
        except DamagedRecordError as exc:  # one damaged record must not hide the others
            log.error("skipping job %s: %s", job_id, exc)
            return None

    def _load(self, key: str, model: type[_Model]) -> _Model | None:
        data = self.storage.get(key)
        if data is None:
            return None
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise DamagedRecordError(f"{key} is not a valid {model.__name__}: {exc}") from exc


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode("utf-8")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (with their newline; a last one without) of a stream of byte chunks."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if rest:
        yield rest

"""The artifact store: one directory per job under ``DATA/jobs/<id>/``.

Layout::

    job.json          the request (owner hash, dataset, teacher, files, options); by the API
    state.json        progress and outcome; written by the worker running the job
    card.json         the teacher card and inference info the job ran with (worker)
    images/           uploads under their content hash (<sha256>.img)
    predictions.jsonl raw ensembled predictions, one line per image (worker, append-only)
    annotations.json  the calibrated COCO output (worker)
    selection.json    a reviewer's thresholds and exclusions, when saved (API)
    thumbs/           review thumbnails, made once on first request (API)

Beside ``jobs/``, ``index/<owner>/all/`` and ``index/<owner>/datasets/<name>/``
hold one empty file per job, named ``<created>-<id>``, so that listing a key's
jobs (newest first, paged with a cursor) or a dataset's reads only those jobs.
The API writes them when it commits a job and removes them with it.

Each JSON file has a single writer, so no file needs a lock: the API never
writes ``state.json`` and a worker never writes ``job.json``. Every write is
atomic (temp file, fsync, rename); a new job's directory is built under a
temporary name and renamed into place, so readers never see half a job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from distill.errors import DistillError
from distill.fileio import atomic_writer, write_json_atomic
from jobs.records import JobRecord, JobState, SavedSelection, utcnow

log = logging.getLogger(__name__)
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # owners (hashes), datasets
_Model = TypeVar("_Model", bound=BaseModel)


class StoreError(DistillError):
    """Something the store cannot do with what it was given or found."""


class MalformedIdError(StoreError):
    """A job id, owner or dataset name that could name another path: refused unread."""


class DamagedRecordError(StoreError):
    """A stored JSON file that does not parse as its record (damaged or foreign)."""


def atomic_write(path: Path, data: bytes | IO[bytes]) -> None:
    """Writes bytes (or a binary stream) atomically (see :mod:`distill.fileio`)."""
    with atomic_writer(path) as fh:
        if isinstance(data, bytes | bytearray):
            fh.write(data)
        else:
            shutil.copyfileobj(data, fh, 1024 * 1024)


class JobStore:
    """Files of every job under ``root/jobs``; safe to share between machines on one volume."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.index_dir = self.root / "index"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """Directory of one job; the id is checked so that it can never name another path."""
        if not JOB_ID_RE.match(job_id):
            raise MalformedIdError(f"malformed job id {job_id!r}")
        return self.jobs_dir / job_id

    def images_dir(self, job_id: str) -> Path:
        """The job's uploaded images."""
        return self.job_dir(job_id) / "images"

    def log_path(self, job_id: str) -> Path:
        """The job's raw prediction log."""
        return self.job_dir(job_id) / "predictions.jsonl"

    def annotations_path(self, job_id: str) -> Path:
        """The job's calibrated COCO output."""
        return self.job_dir(job_id) / "annotations.json"

    def card_path(self, job_id: str) -> Path:
        """The teacher card and info the job ran with."""
        return self.job_dir(job_id) / "card.json"

    # -- creating ---------------------------------------------------------------------
    def staging(self, job_id: str) -> Path:
        """A private directory to build a new job in; :meth:`commit` publishes it."""
        path = self.jobs_dir / f".staging-{job_id}"
        (path / "images").mkdir(parents=True)
        return path

    def commit(self, staging: Path, record: JobRecord) -> None:
        """Writes ``job.json`` into a staged job and renames it into place (atomic)."""
        write_json_atomic(staging / "job.json", record.model_dump(mode="json"))
        _fsync_dir(staging / "images")
        os.rename(staging, self.job_dir(record.id))
        _fsync_dir(self.jobs_dir)
        self._index(record)

    def discard(self, staging: Path) -> None:
        """Removes a staged job that was not accepted."""
        shutil.rmtree(staging, ignore_errors=True)

    # -- reading and updating ---------------------------------------------------------
    def load_job(self, job_id: str) -> JobRecord | None:
        """The job record, or None when there is no such job."""
        try:
            return _load(self.job_dir(job_id) / "job.json", JobRecord)
        except MalformedIdError:
            return None

    def save_job(self, record: JobRecord) -> None:
        """Rewrites ``job.json`` (the API's file)."""
        write_json_atomic(self.job_dir(record.id) / "job.json", record.model_dump(mode="json"))

    def load_state(self, job_id: str) -> JobState | None:
        """The worker's state of the job, None before a worker started it."""
        try:
            return _load(self.job_dir(job_id) / "state.json", JobState)
        except MalformedIdError:
            return None

    def save_state(self, job_id: str, state: JobState) -> None:
        """Rewrites ``state.json`` (the worker's file)."""
        state.updated_at = utcnow()
        write_json_atomic(self.job_dir(job_id) / "state.json", state.model_dump(mode="json"))

    def load_card(self, job_id: str) -> dict[str, Any] | None:
        """``{"card": ..., "info": ...}`` as the worker saved them, or None."""
        try:
            data: dict[str, Any] = json.loads(self.card_path(job_id).read_text(encoding="utf-8"))
            return data
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def load_selection(self, owner: str, *, job_id: str | None = None,
                       dataset: str | None = None) -> SavedSelection | None:
        """The saved review selection of a job or of an owner's dataset, if any."""
        try:
            return _load(self._selection_path(owner, job_id, dataset), SavedSelection)
        except DamagedRecordError as exc:
            log.error("ignoring a damaged selection: %s", exc)
            return None

    def save_selection(self, owner: str, selection: SavedSelection, *, job_id: str | None = None,
                       dataset: str | None = None) -> None:
        """Stores a review selection (the API's file); downloads apply it from now on."""
        selection.saved_at = utcnow()
        path = self._selection_path(owner, job_id, dataset)
        write_json_atomic(path, selection.model_dump(mode="json"))

    def _selection_path(self, owner: str, job_id: str | None, dataset: str | None) -> Path:
        if job_id is not None:
            return self.job_dir(job_id) / "selection.json"
        return self._index_folder(owner, dataset).parent / f"{dataset}.selection.json"

    def list_owner_jobs(self, owner: str, *, dataset: str | None = None,
                        after: str | None = None) -> Iterator[tuple[str, JobRecord]]:
        """A key's jobs (or one dataset's), newest first, with each one's cursor.

        ``after`` is a cursor from an earlier page: the listing resumes after it.
        Reads only the index and the listed jobs' records.
        """
        folder = self._index_folder(owner, dataset)
        if not folder.is_dir():
            return
        for entry in sorted((p.name for p in folder.iterdir()), reverse=True):
            if after is not None and entry >= after:
                continue
            record = self._load_listed(entry.rsplit("-", 1)[-1])
            if record is not None and record.owner == owner:
                yield entry, record

    def list_owner_datasets(self, owner: str) -> list[str]:
        """The names of a key's datasets that hold at least one job, sorted."""
        folder = self._index_folder(owner, None).parent / "datasets"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.iterdir()))

    def reindex(self) -> int:
        """Adds the index entries of jobs that lack them (jobs written before the index
        existed); returns how many. Cheap when nothing is missing."""
        added = 0
        for record in self.list_jobs():
            for path in self._index_paths(record):
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                    added += 1
        return added

    def list_jobs(self) -> Iterator[JobRecord]:
        """Every committed job, oldest first (a full scan: for maintenance, not requests)."""
        records = []
        for path in self.jobs_dir.iterdir():
            if JOB_ID_RE.match(path.name):
                try:
                    record = _load(path / "job.json", JobRecord)
                except DamagedRecordError as exc:  # one damaged record must not hide the others
                    log.error("skipping job %s: %s", path.name, exc)
                    continue
                if record is not None:
                    records.append(record)
        yield from sorted(records, key=lambda r: (r.created_at, r.id))

    # -- deleting ---------------------------------------------------------------------
    def delete_artifacts(self, job_id: str) -> None:
        """Removes images, predictions and outputs, keeping job.json and state.json."""
        root = self.job_dir(job_id)
        shutil.rmtree(root / "images", ignore_errors=True)
        for name in ("predictions.jsonl", "annotations.json", "card.json"):
            (root / name).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        """Removes the whole job directory and its index entries."""
        root = self.job_dir(job_id)
        record = self.load_job(job_id)
        if record is not None:
            for path in self._index_paths(record):
                path.unlink(missing_ok=True)
        # Rename first so that a half-deleted job is never listed.
        trash = self.jobs_dir / f".deleted-{job_id}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(root, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


    # -- the index ------------------------------------------------------------------------
    def _index_folder(self, owner: str, dataset: str | None) -> Path:
        if not _SAFE_KEY.match(owner) or (dataset is not None and not _SAFE_KEY.match(dataset)):
            raise MalformedIdError(f"malformed owner or dataset {owner!r}, {dataset!r}")
        base = self.index_dir / owner
        return base / "all" if dataset is None else base / "datasets" / dataset

    def _index_paths(self, record: JobRecord) -> list[Path]:
        entry = f"{record.created_at.strftime('%Y%m%dT%H%M%S%f')}-{record.id}"
        folders = [self._index_folder(record.owner, None)]
        if record.dataset is not None:
            folders.append(self._index_folder(record.owner, record.dataset))
        return [folder / entry for folder in folders]

    def _index(self, record: JobRecord) -> None:
        for path in self._index_paths(record):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            _fsync_dir(path.parent)

    def _load_listed(self, job_id: str) -> JobRecord | None:
        try:
            return self.load_job(job_id)
        except DamagedRecordError as exc:  # one damaged record must not hide the others
            log.error("skipping job %s: %s", job_id, exc)
            return None


def _load(path: Path, model: type[_Model]) -> _Model | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValidationError as exc:
        raise DamagedRecordError(f"{path} is not a valid {model.__name__}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    """Makes a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The artifact store: one directory per job under ``DATA/jobs/<id>/``.

Layout::

    job.json          the request (owner hash, dataset, teacher, files, options); by the API
    state.json        progress and outcome; written by the worker running the job
    card.json         the teacher card and inference info the job ran with (worker)
    images/           uploads under generated names (000000.img, ...)
    predictions.jsonl raw ensembled predictions, one line per image (worker, append-only)
    annotations.json  the calibrated COCO output (worker)

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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from distill.fileio import atomic_writer, write_json_atomic
from distill.options import Fusion

log = logging.getLogger(__name__)
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_Model = TypeVar("_Model", bound=BaseModel)


def utcnow() -> datetime:
    """Timezone-aware now, as stored everywhere."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A fresh job id: 32 hex digits, safe as a directory name and an RQ id."""
    return uuid.uuid4().hex


class StoredFile(BaseModel):
    """One uploaded image: its (sanitised, de-duplicated) name and where its bytes are."""

    name: str
    stored: str
    bytes: int
    width: int
    height: int


class JobStatus(StrEnum):
    """A job's life: queued -> running -> finished | failed; cancelled from queued or running.

    A retried job goes from running back to queued (the API shows what RQ says).
    """

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Finished, failed or cancelled: nothing will change any more."""
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobRequest(BaseModel):
    """What the client asked for; None means the service default / calibration."""

    tta: str
    fusion: Fusion
    score_thresh: float | None = None
    keypoint_thresh: float | None = None


class JobRecord(BaseModel):
    """``job.json``: the job as accepted; only the API writes it."""

    id: str
    owner: str  # sha256 of the API key, never the key
    dataset: str | None = None
    created_at: datetime
    files: list[StoredFile]
    request: JobRequest
    timeout_s: int
    cancelled_at: datetime | None = None
    # The registered teacher the job is for, and its checkpoint's checksum when accepted
    # ("" for a record written before teachers had names: the only registered one).
    teacher: str = ""
    teacher_sha256: str | None = None


class ImageError(BaseModel):
    """An image the worker could not annotate."""

    file_name: str
    error: str


class JobState(BaseModel):
    """``state.json``: progress and outcome; only the worker running the job writes it."""

    status: JobStatus = JobStatus.RUNNING
    attempts: int = 0
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    done: int = 0
    failed: int = 0
    total: int = 0
    errors: list[ImageError] = Field(default_factory=list)
    error: str | None = None
    worker: str | None = None
    teacher_sha256: str | None = None
    annotations: int | None = None

    @property
    def is_terminal(self) -> bool:
        """The worker is done with the job (finished, failed or cancelled)."""
        return self.status.is_terminal

    def start(self, worker: str, total: int) -> None:
        """A worker (re)starts the job: one more attempt, the last error cleared."""
        self.status, self.error, self.finished_at = JobStatus.RUNNING, None, None
        self.attempts += 1
        self.started_at = self.started_at or utcnow()
        self.worker, self.total = worker, total

    def finish(self, annotations: int) -> None:
        """Every image is done and the COCO file is written."""
        self.status, self.finished_at, self.annotations = JobStatus.FINISHED, utcnow(), annotations

    def fail(self, error: str) -> None:
        """The job ended without a result; ``error`` says why."""
        self.status, self.error, self.finished_at = JobStatus.FAILED, error, utcnow()


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
        self.jobs_dir.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """Directory of one job; the id is checked so that it can never name another path."""
        if not JOB_ID_RE.match(job_id):
            raise KeyError(f"malformed job id {job_id!r}")
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

    def discard(self, staging: Path) -> None:
        """Removes a staged job that was not accepted."""
        shutil.rmtree(staging, ignore_errors=True)

    # -- reading and updating ---------------------------------------------------------
    def load_job(self, job_id: str) -> JobRecord | None:
        """The job record, or None when there is no such job."""
        try:
            return _load(self.job_dir(job_id) / "job.json", JobRecord)
        except KeyError:
            return None

    def save_job(self, record: JobRecord) -> None:
        """Rewrites ``job.json`` (the API's file)."""
        write_json_atomic(self.job_dir(record.id) / "job.json", record.model_dump(mode="json"))

    def load_state(self, job_id: str) -> JobState | None:
        """The worker's state of the job, None before a worker started it."""
        try:
            return _load(self.job_dir(job_id) / "state.json", JobState)
        except KeyError:
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

    def list_jobs(self) -> Iterator[JobRecord]:
        """Every committed job, oldest first."""
        records = []
        for path in self.jobs_dir.iterdir():
            if JOB_ID_RE.match(path.name):
                try:
                    record = _load(path / "job.json", JobRecord)
                except RuntimeError as exc:  # one damaged record must not hide the others
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
        """Removes the whole job directory."""
        root = self.job_dir(job_id)
        # Rename first so that a half-deleted job is never listed.
        trash = self.jobs_dir / f".deleted-{job_id}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(root, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _load(path: Path, model: type[_Model]) -> _Model | None:
    try:
        return model.model_validate_json(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValidationError as exc:
        raise RuntimeError(f"{path} is not a valid {model.__name__}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    """Makes a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

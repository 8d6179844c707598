"""The job contract's records: what ``job.json`` and ``state.json`` hold.

``JobRecord`` is the job as the API accepted it (only the API writes it);
``JobState`` is its progress and outcome (only the worker running it writes
it), with the status transitions as methods so that no caller spells a
transition by hand.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field

from distill.options import Fusion


def utcnow() -> datetime:
    """Timezone-aware now, as stored everywhere."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A fresh job id: 32 hex digits, safe as a directory name and an RQ id."""
    return uuid.uuid4().hex


class StoredFile(BaseModel):
    """One image: its name in the output (the client's relative path, sanitised, unique
    in its dataset) and its bytes, stored under their content hash; or, for an image
    referenced in place (``source``: an ``s3://`` or ``https://`` URI the worker reads),
    nothing stored, ``sha256`` the digest of its identity (URI, ETag, size) and the
    size 0 until the worker reads it."""

    name: str
    stored: str
    bytes: int
    width: int
    height: int
    sha256: str = ""  # "" in records written before images were keyed by content
    source: str | None = None
    # Boxes an annotator drew on the image (Label Studio's interactive pre-annotation),
    # (x0, y0, x1, y1) as fractions of its width and height: a keypoint teacher places
    # keypoints in them instead of detecting (distill.annotate.infer_to_log's prompts).
    boxes: list[tuple[float, float, float, float]] | None = None


class Renamed(BaseModel):
    """An upload whose name was taken (in its batch or its dataset) by other content."""

    original: str
    name: str
    clashes_with_job: str | None = None  # None: another file of the same batch


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
    """What the client asked for; None means the service default / calibration. The
    selection knobs carry the names of :class:`distill.pseudolabels.SelectionConfig`
    (records written before read their old ``score_thresh`` / ``keypoint_thresh``)."""

    tta: str
    fusion: Fusion
    score_threshold: float | None = Field(
        default=None, validation_alias=AliasChoices("score_threshold", "score_thresh"))
    keypoint_threshold: float | None = Field(
        default=None, validation_alias=AliasChoices("keypoint_threshold", "keypoint_thresh"))
    min_votes: int = 0  # box teachers: transforms that must agree on a kept instance
    ignore_factor: float = 0.0  # calibrated ignore regions (SelectionConfig); 0: none
    # Explicit thresholds per category id (null: the category keeps nothing), as another
    # job calibrated them (jobs.calibration); a category left out keeps nothing.
    score_thresholds: dict[str, float | None] = Field(default_factory=dict)
    # Where thresholds the client did not give came from, when not from this job's own
    # images (jobs.calibration.with_last: the teacher's last calibrated job).
    thresholds_from: str | None = None


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
    renamed: list[Renamed] = Field(default_factory=list)
    plan: str | None = None  # the plan (a by-reference request) that made this batch


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
    # The calibrated file's info.categories_report: per category the labeled target, the
    # candidates, the kept count, the threshold, the shortfall flag and the ignore regions.
    categories_report: dict[str, Any] | None = None

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

    def finish(self, annotations: int, categories_report: dict[str, Any] | None = None) -> None:
        """Every image is done and the COCO file is written."""
        self.status, self.finished_at, self.annotations = JobStatus.FINISHED, utcnow(), annotations
        self.categories_report = categories_report

    def fail(self, error: str) -> None:
        """The job ended without a result; ``error`` says why."""
        self.status, self.error, self.finished_at = JobStatus.FAILED, error, utcnow()

    def stop(self) -> None:
        """The worker stopped the job after its cancellation (its artifacts are gone)."""
        self.status, self.finished_at = JobStatus.CANCELLED, utcnow()


def ended_at(record: JobRecord, state: JobState | None) -> datetime | None:
    """When the job ended (cancelled, finished or failed), None while it is queued or
    running: the one "is this job over" rule of the API, the worker and maintenance."""
    if record.cancelled_at is not None:
        return record.cancelled_at
    if state is not None and state.is_terminal:
        return state.finished_at or state.updated_at or record.created_at
    return None


def is_over(record: JobRecord, state: JobState | None) -> bool:
    """Cancelled, finished or failed: nothing will change any more."""
    return ended_at(record, state) is not None


def _json_number(value: Any) -> Any:
    # Pydantic's lax mode reads true as 1 and "0.5" as 0.5; a JSON body's numbers are
    # numbers, as the schema says (57.0 still counts as the integer 57 there).
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


JsonFloat = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_json_number)]
JsonInt = Annotated[int, BeforeValidator(_json_number)]


class SelectionChoice(BaseModel):
    """A reviewer's choice for a job or a dataset (the body of ``PUT .../selection``):
    thresholds per category id (``None`` keeps nothing), the keypoint threshold, the
    images left out, and per image (file name) the indices of the predictions accepted
    whatever their score or rejected as wrong (indices into the image's predictions as
    the review document lists them). Every download of that job or dataset applies it;
    ``min_votes`` None keeps the job's own."""

    score_thresholds: dict[str, JsonFloat | None] = Field(default_factory=dict)
    keypoint_threshold: JsonFloat | None = None
    excluded: list[str] = Field(default_factory=list)
    accepted: dict[str, list[JsonInt]] = Field(default_factory=dict)
    rejected: dict[str, list[JsonInt]] = Field(default_factory=dict)
    # The bounds before the validator, or the schema says ge/le, which JSON Schema lacks.
    min_votes: Annotated[int, Field(ge=0, le=100), BeforeValidator(_json_number)] | None = None


class SavedSelection(SelectionChoice):
    """A :class:`SelectionChoice` as stored (``selection.json``; the API writes it), with
    the time the store stamped on it: never the client's to set."""

    saved_at: datetime | None = None

"""Request and response bodies of the API (documented in its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from worker.store import ImageError, JobRequest

JobStatus = Literal["queued", "running", "finished", "failed", "cancelled"]


class Progress(BaseModel):
    """Images annotated, images that failed, images in the job."""

    done: int = 0
    failed: int = 0
    total: int = 0


class JobLinks(BaseModel):
    """Where to poll and where to download."""

    status: str
    annotations: str


class AcceptedFile(BaseModel):
    """One accepted upload: the name it has in the output (sanitised, unique in the job)."""

    name: str
    original: str | None
    width: int
    height: int
    bytes: int


class JobAccepted(BaseModel):
    """Answer to POST /annotate (202)."""

    id: str
    status: JobStatus = "queued"
    dataset: str | None
    images: int
    files: list[AcceptedFile]
    links: JobLinks


class JobOut(BaseModel):
    """A job's status, progress, timing and per-image errors."""

    id: str
    status: JobStatus
    dataset: str | None
    created_at: datetime
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    progress: Progress
    attempts: int = 0
    errors: list[ImageError] = Field(default_factory=list)
    error: str | None = None
    annotations: int | None = None
    request: JobRequest
    links: JobLinks


class JobList(BaseModel):
    """GET /jobs."""

    jobs: list[JobOut]


class Deleted(BaseModel):
    """DELETE /jobs/{id}: ``cancelled`` (it was queued or running) or ``deleted``."""

    id: str
    previous_status: JobStatus
    status: Literal["cancelled", "deleted"]


class WorkerOut(BaseModel):
    """A live worker, as announced by its heartbeat."""

    worker: str
    hostname: str | None = None
    state: str | None = None
    job: str | None = None
    device: str | None = None
    last_seen: str | None = None


class TeacherOut(BaseModel):
    """A teacher checkpoint served by at least one live worker, with its card."""

    sha256: str
    checkpoint: str | None = None
    card: dict[str, Any]
    default_tta: str | None = None
    default_fusion: str | None = None
    workers: list[WorkerOut]


class TeacherList(BaseModel):
    """GET /teachers."""

    queue: str
    teachers: list[TeacherOut]


class Health(BaseModel):
    """GET /healthz."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """GET /readyz: Redis reachable and at least one worker alive."""

    ready: bool
    redis: bool
    workers: int
    problems: list[str] = Field(default_factory=list)

"""Request and response bodies of the API (documented in its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from jobs.records import ImageError, JobRequest, JobStatus, Renamed

__all__ = ["JobStatus"]  # re-exported: the API's status vocabulary is the store's


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
    status: JobStatus = JobStatus.QUEUED
    dataset: str | None
    teacher: str
    images: int
    renamed: list[Renamed] = Field(
        default_factory=list, description="uploads whose name another image already had "
                                          "(in the batch or the dataset), and their new name")
    files: list[AcceptedFile]
    thresholds_from: str | None = Field(
        default=None, description="with calibration=teacher: whose thresholds the job "
                                  "selects with (also in its request and COCO info)")
    links: JobLinks


class JobOut(BaseModel):
    """A job's status, progress, timing and per-image errors."""

    id: str
    status: JobStatus
    dataset: str | None
    teacher: str
    teacher_sha256: str | None = None
    # Why a queued job does not start, e.g. no live worker serves its teacher.
    waiting_for: str | None = None
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
    categories_report: dict[str, Any] | None = Field(
        default=None, description="once finished: per category id the labeled target, the "
        "candidates, the kept count, the calibrated threshold, a shortfall flag (fewer "
        "candidates than the target) and the ignore regions; for keypoint teachers also "
        "'keypoints' (target and kept keypoints per instance)")
    request: JobRequest
    links: JobLinks


class JobList(BaseModel):
    """GET /jobs: one page, newest first."""

    jobs: list[JobOut]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last one")


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
    sha256: str | None = Field(default=None, description="checksum of the checkpoint it has "
                                                         "loaded")
    last_seen: str | None = None


class TeacherOut(BaseModel):
    """A registered teacher: what its card says, and the live workers that serve it."""

    name: str
    queue: str
    checkpoint: str
    sha256: str | None = None
    task: str | None = None
    arch: str | None = None
    categories: list[dict[str, Any]] = Field(default_factory=list)
    min_size: int | None = None
    max_size: int | None = None
    calibrated: bool = Field(
        default=False, description="the card carries labeled statistics, so thresholds can be "
                                   "calibrated; without them jobs need explicit thresholds")
    error: str | None = Field(default=None, description="why the checkpoint is unusable")
    card: dict[str, Any] | None = None
    workers: list[WorkerOut]
    presets: list[str] = Field(
        default_factory=list, description="the named TTA presets this teacher accepts under "
                                          "the service's limits (GET /options describes them)")
    refused_presets: dict[str, str] = Field(
        default_factory=dict, description="the other presets, each with why it is refused")


class PresetOut(BaseModel):
    """A named TTA preset (``distill.options.TTA_PRESETS``)."""

    name: str
    passes: int = Field(description="forward passes per image")
    description: str


class Options(BaseModel):
    """GET /options: what the upload form offers, as the service is configured."""

    presets: list[PresetOut]
    default_preset: str = Field(description="the preset a job without `tta` runs")
    max_files: int = Field(description="images per POST /annotate; send more in batches")
    dataset_pattern: str = Field(description="the regular expression a dataset name matches")


class DatasetOut(BaseModel):
    """One of the key's datasets: its jobs, counted by status, and their images."""

    name: str
    jobs: int
    statuses: dict[str, int]
    images: Progress = Field(default_factory=Progress,
                             description="images annotated, failed and sent, over its jobs")


class DatasetList(BaseModel):
    """GET /datasets."""

    datasets: list[DatasetOut]


class TeacherList(BaseModel):
    """GET /teachers."""

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

"""A plan's stored data: ``plans/<id>/plan.json`` (the API's), ``state.json`` (the
worker's) and the ``cancelled`` marker, with the keys they live under.

Running a plan is :mod:`jobs.plans`; these are what the API and the worker share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from jobs.records import JobRequest, utcnow
from jobs.storage import join
from jobs.store import JOB_ID_RE, JobStore, MalformedIdError

PlanStatus = Literal["queued", "running", "finished", "failed", "cancelled"]
CANCELLED = "cancelled"


class PlanRecord(BaseModel):
    """``plan.json``: the request as accepted, with the limits it runs under."""

    id: str
    owner: str
    dataset: str
    created_at: datetime
    teacher: str
    teacher_sha256: str | None = None
    request: JobRequest
    source: str | None = None  # an s3:// prefix to list ...
    recursive: bool = False
    images: list[str] = Field(default_factory=list)  # ... or the URIs themselves
    batch_size: int
    max_images: int
    job_timeout_s: int
    retries: int


class PlanState(BaseModel):
    """``state.json``: how far the plan got (only the worker running it writes it)."""

    status: PlanStatus = "queued"
    listed: int = 0  # images listed into batches (the held ones included)
    skipped: int = 0  # listed objects without an image suffix
    held: int = 0  # images the dataset holds already, annotated (jobs.held): not sent again
    batches: int = 0  # batches formed (they number the batch job ids)
    jobs: int = 0  # batch jobs that exist (a batch of names the dataset held makes none)
    cursor: str | None = None  # the last key listed (a source) or URI index (a list)
    error: str | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None


def plan_key(plan_id: str, name: str) -> str:
    """The key of a plan's ``plan.json`` or ``state.json`` (the id checked as a job's, so
    that it can never name another key)."""
    if not JOB_ID_RE.match(plan_id):
        raise MalformedIdError(f"malformed plan id {plan_id!r}")
    return join("plans", plan_id, name)


def load_plan(store: JobStore, plan_id: str) -> tuple[PlanRecord, PlanState] | None:
    """A plan and its state, None when there is no such plan."""
    try:
        raw = store.storage.get(plan_key(plan_id, "plan.json"))
    except MalformedIdError:
        return None
    if raw is None:
        return None
    state = store.storage.get(plan_key(plan_id, "state.json"))
    return (PlanRecord.model_validate_json(raw),
            PlanState() if state is None else PlanState.model_validate_json(state))


def save_plan(store: JobStore, plan: PlanRecord) -> None:
    """Stores an accepted plan (the API's file)."""
    store.storage.put(plan_key(plan.id, "plan.json"), plan.model_dump_json().encode())


def cancel_plan(store: JobStore, plan_id: str) -> None:
    """Marks a plan cancelled (the API's file); a worker then stops it and cancels its
    batches (:func:`jobs.plans.run_plan`, queued by the caller)."""
    store.storage.put(plan_key(plan_id, CANCELLED), b"")


def is_cancelled(store: JobStore, plan_id: str) -> bool:
    """Whether the API cancelled the plan (one small lookup)."""
    return store.storage.exists(plan_key(plan_id, CANCELLED))


def save_state(store: JobStore, plan_id: str, state: PlanState) -> None:
    """Stores a plan's state (the worker's file), stamped now."""
    state.updated_at = utcnow()
    store.storage.put(plan_key(plan_id, "state.json"), state.model_dump_json().encode())

"""The RQ job: annotate one stored batch with the worker's teacher.

Resumable by construction: every finished inference batch is appended (and
fsynced) to the job's prediction log before progress is reported, and
``infer_to_log`` skips images already in the log, so a job retried after its
worker died continues where it stopped and no image is annotated twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.job import Job

from distill.annotate import finalize, infer_to_log
from distill.errors import DistillError
from distill.predictions import ImageRecord, PredictionLog
from distill.pseudolabels import SelectionConfig
from worker import runtime
from worker.store import ImageError, JobRecord, JobState, JobStore, utcnow, write_json

log = logging.getLogger(__name__)


class JobCancelledError(Exception):
    """The job was cancelled or deleted through the API while it ran."""


class _ObservedLog(PredictionLog):
    """A prediction log that reports each appended batch, after it is on disk."""

    def __init__(self, path: Path, on_append: Callable[[list[ImageRecord]], None]) -> None:
        super().__init__(path)
        self._on_append = on_append

    def append(self, records: Iterable[ImageRecord]) -> None:
        """Appends (fsynced), then reports."""
        batch = list(records)
        super().append(batch)
        self._on_append(batch)


def annotate_job(job_id: str) -> dict[str, Any]:
    """Runs the teacher over a stored job's images and writes its calibrated COCO file.

    Deterministic failures (bad preset, unusable card) mark the job failed
    without retrying; anything else is raised so that RQ retries the job.
    """
    rt = runtime.current()
    store = rt.store
    record = store.load_job(job_id)
    if record is None or record.cancelled_at is not None:
        log.info("job %s was deleted or cancelled before it started", job_id)
        return {"status": "cancelled"}
    state = store.load_state(job_id) or JobState()
    if state.status == "finished" and store.annotations_path(job_id).exists():
        return {"status": "finished"}  # a duplicate delivery of a finished job
    state.status, state.error, state.finished_at = "running", None, None
    state.attempts += 1
    state.started_at = state.started_at or utcnow()
    state.worker = rt.worker_name
    state.total = len(record.files)
    if state.teacher_sha256 is not None and state.teacher_sha256 != rt.teachers.sha256:
        return _fail(store, job_id, state, "the job was started by another teacher "
                     f"({state.teacher_sha256[:12]}...); every worker of a queue must serve "
                     f"the same checkpoint, this one serves {rt.teachers.sha256[:12]}...")
    state.teacher_sha256 = rt.teachers.sha256
    try:
        teacher = rt.teachers.get(record.request.tta, record.request.fusion)
    except DistillError as exc:
        return _fail(store, job_id, state, str(exc))
    write_json(store.card_path(job_id), {"card": teacher.card.to_dict(), "info": teacher.info()})

    names = {f.name for f in record.files}
    outcomes = {n: r.error for n, r in PredictionLog(store.log_path(job_id)).read().items()
                if n in names}
    _count(state, outcomes)
    store.save_state(job_id, state)
    rq_job = get_current_job()

    def on_batch(batch: list[ImageRecord]) -> None:
        _check_not_cancelled(store, job_id)
        outcomes.update({r.file_name: r.error for r in batch})
        _count(state, outcomes)
        store.save_state(job_id, state)
        if rq_job is not None:
            rq_job.meta["progress"] = {"done": state.done, "failed": state.failed,
                                       "total": state.total}
            rq_job.save_meta()

    sources = [(f.name, store.images_dir(job_id) / f.stored) for f in record.files]
    try:
        infer_to_log(teacher, sources, _ObservedLog(store.log_path(job_id), on_batch))
        _check_not_cancelled(store, job_id)
        records = [r for n, r in PredictionLog(store.log_path(job_id)).read().items()
                   if n in names]
        selection = SelectionConfig(score_threshold=record.request.score_thresh,
                                    keypoint_threshold=record.request.keypoint_thresh)
        coco = finalize(records, teacher.card, selection, teacher.info())
    except JobCancelledError:
        _discard(store, job_id)
        return {"status": "cancelled"}
    except DistillError as exc:
        return _fail(store, job_id, state, str(exc))
    except Exception as exc:
        # Recorded so that the API can show why an attempt failed; RQ decides on a retry.
        state.error = f"attempt {state.attempts} failed: {type(exc).__name__}: {exc}"
        store.save_state(job_id, state)
        raise
    write_json(store.annotations_path(job_id), coco)
    _count(state, outcomes)
    state.status, state.finished_at = "finished", utcnow()
    state.annotations = len(coco["annotations"])
    store.save_state(job_id, state)
    log.info("job %s finished: %d images, %d failed, %d annotations", job_id, state.done,
             state.failed, state.annotations)
    return {"status": "finished", "done": state.done, "failed": state.failed,
            "annotations": state.annotations}


def on_job_failed(job: Job, connection: Redis, exc_type: type[BaseException] | None,
                  exc: BaseException | None, tb: TracebackType | None) -> None:
    """RQ failure callback: records a final failure in the store.

    RQ also calls it for a failure it will retry (raised or abandoned job),
    so only a job with no retries left is marked failed. It runs in whichever
    worker notices the failure, possibly not the one that ran the job.
    """
    rt = runtime.installed()
    if rt is None or job.should_retry:
        return
    record = rt.store.load_job(job.id)
    if record is None or record.cancelled_at is not None:
        return
    state = rt.store.load_state(job.id) or JobState(total=len(record.files))
    if state.status == "finished":
        return
    if exc_type is not None and exc_type.__name__ == "AbandonedJobError":
        reason = "its worker stopped responding (killed or lost) and no retries are left"
    else:
        reason = f"{exc_type.__name__ if exc_type else 'error'}: {exc}"
    _fail(rt.store, job.id, state, f"job failed after {state.attempts} attempt(s): {reason}")


def _count(state: JobState, outcomes: dict[str, str | None]) -> None:
    state.done = sum(e is None for e in outcomes.values())
    state.failed = len(outcomes) - state.done
    state.errors = [ImageError(file_name=n, error=e) for n, e in sorted(outcomes.items())
                    if e is not None]


def _fail(store: JobStore, job_id: str, state: JobState, error: str) -> dict[str, Any]:
    log.warning("job %s failed: %s", job_id, error)
    state.status, state.error, state.finished_at = "failed", error, utcnow()
    store.save_state(job_id, state)
    return {"status": "failed", "error": error}


def _check_not_cancelled(store: JobStore, job_id: str) -> None:
    record: JobRecord | None = store.load_job(job_id)
    if record is None or record.cancelled_at is not None:
        raise JobCancelledError(job_id)


def _discard(store: JobStore, job_id: str) -> None:
    """Removes what this run wrote after a cancellation (appending may have recreated files)."""
    if store.load_job(job_id) is None:
        store.delete_job(job_id)
    else:
        store.delete_artifacts(job_id)
    log.info("job %s cancelled; its artifacts are removed", job_id)

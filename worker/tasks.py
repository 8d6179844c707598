"""The RQ job: annotate one stored batch with the worker's teacher.

Resumable by construction: every finished inference batch is appended (and
fsynced, or stored as a part on a bucket: :mod:`jobs.predlog`) to the job's
prediction log before progress is reported, and ``infer_to_log`` skips images
already in the log, so a job retried after its worker died continues where it
stopped and no image is annotated twice. What the worker fetches or appends
locally lives in its own cache folder, removed when the job ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from distill.annotate import infer_to_log, score_floor
from distill.coco import objects
from distill.errors import DistillError
from distill.interrupt import interruptible
from distill.predictions import ImageRecord
from distill.pseudolabels import finalize
from jobs.calibration import remember
from jobs.datasets import job_ended
from jobs.logs import job_context
from jobs.metrics import record_job
from jobs.plans import run_plan
from jobs.predlog import open_log, seal_log, sync_log
from jobs.records import ImageError, JobRecord, JobState, JobStatus
from jobs.selection import selection_for
from jobs.storage import StorageUnavailableError
from jobs.store import JobStore
from worker import runtime
from worker.inputs import cached, image_sources

log = logging.getLogger(__name__)
SYNC_S = 1.0  # on a bucket: seconds between stored progress reports of a running job


class JobCancelledError(Exception):
    """The job was cancelled or deleted through the API while it ran."""


def annotate_job(job_id: str) -> dict[str, Any]:
    """Runs the job's teacher over its stored images and writes its calibrated COCO file.

    Deterministic failures (bad preset, unusable card, a teacher this worker
    does not serve) mark the job failed without retrying; anything else is
    raised so that RQ retries the job. Every line logged meanwhile carries ``job_id``.
    """
    with job_context(job_id):
        return _annotate_job(job_id)


def _annotate_job(job_id: str) -> dict[str, Any]:
    rt = runtime.current()
    with cached(rt.cache / job_id) as cache:
        return _run(rt, job_id, cache)


def _run(rt: runtime.Runtime, job_id: str, cache: Path) -> dict[str, Any]:
    started = time.monotonic()  # this attempt's time, for the seconds-per-image metric
    store = rt.store
    record = store.load_job(job_id)
    if record is None or record.cancelled_at is not None:
        log.info("job %s was deleted or cancelled before it started", job_id)
        return {"status": JobStatus.CANCELLED}
    state = store.load_state(job_id) or JobState()
    if state.status == JobStatus.FINISHED and store.storage.exists(store.annotations_key(job_id)):
        return {"status": JobStatus.FINISHED}  # a duplicate delivery of a finished job
    state.start(rt.worker_name, len(record.files))
    pool = _pool_for(rt, record)
    if pool is None:
        return _fail(store, job_id, state, f"this worker does not serve teacher "
                     f"{record.teacher!r} (it serves {', '.join(rt.teachers)})")
    pool.refresh()
    if state.teacher_sha256 is not None and state.teacher_sha256 != pool.sha256:
        return _fail(store, job_id, state, "the job was started with another checkpoint of "
                     f"teacher {pool.name!r} ({state.teacher_sha256[:12]}...), which has "
                     f"since been replaced ({pool.sha256[:12]}...); predictions of two "
                     "checkpoints cannot be mixed: submit the images again")
    state.teacher_sha256 = pool.sha256
    try:
        teacher = pool.get(record.request.tta, record.request.fusion)
    except DistillError as exc:
        return _fail(store, job_id, state, str(exc))
    store.save_json(store.job_key(job_id, "card.json"),
                    {"card": teacher.card.to_dict(), "info": teacher.info()})

    # The log is read here for the progress counts; afterwards each batch's outcomes arrive
    # through the hook (infer_to_log's index of done images and finalize read it again).
    names = {f.name for f in record.files}
    log_file = open_log(store, job_id, cache)
    outcomes = {n: r.error for n, r in log_file.read().items() if n in names}
    _count(state, outcomes)
    store.save_state(job_id, state)

    # On a bucket, progress (the log's new part, the state, the cancellation check) is
    # stored about once a second instead of after every batch: a fast model never waits
    # on the bucket per image, and a restart redoes at most that second's images.
    every = 0.0 if store.storage.local_path(store.job_key(job_id)) is not None else SYNC_S
    progress_due = _Every(every)

    def report() -> None:
        sync_log(log_file)  # the log first: the state never counts an image not stored
        _count(state, outcomes)
        store.save_state(job_id, state)
        _check_not_cancelled(store, job_id)

    def on_batch(batch: list[ImageRecord]) -> None:
        outcomes.update({r.file_name: r.error for r in batch})
        if progress_due():
            report()

    def on_failed(name: str, error: str) -> None:  # an image that could not be fetched
        failed = [ImageRecord.failed(name, error)]
        log_file.append(failed)
        on_batch(failed)

    try:
        selection, source = selection_for(record.request)
        # Cancellation is checked after every batch and, within one, between passes.
        with interruptible(lambda: _check_not_cancelled(store, job_id),
                           every_s=max(0.5, every)):
            # A dataset is calibrated over all its jobs: no per-job floor (annotate.py).
            floor = None if record.dataset else score_floor(teacher, selection)
            sources = image_sources(store, record, set(outcomes), cache, on_failed,
                                    rt.references)
            inferred = infer_to_log(teacher, sources, log_file, on_batch=on_batch,
                                    floor=floor)
        report()
        given = record.request.thresholds_from
        coco = finalize(lambda: log_file.iter_records(names), teacher.card, selection,
                        {**teacher.info(), "teacher_name": pool.name,
                         "selection_source": source,
                         **({"thresholds_from": given} if given else {})})
    except JobCancelledError:
        _discard(store, job_id)
        return {"status": JobStatus.CANCELLED}
    except DistillError as exc:
        if isinstance(exc, StorageUnavailableError):
            raise  # the bucket is away: RQ retries the attempt, which resumes from the log
        return _fail(store, job_id, state, str(exc))
    except Exception as exc:
        # Recorded so that the API can show why an attempt failed; RQ decides on a retry.
        state.error = f"attempt {state.attempts} failed: {type(exc).__name__}: {exc}"
        with contextlib.suppress(StorageUnavailableError):
            store.save_state(job_id, state)
        raise
    seal_log(log_file)
    store.save_json(store.annotations_key(job_id), coco)
    state.finish(len(objects(coco)), coco["info"].get("categories_report"))
    store.save_state(job_id, state)
    log.info("job %s finished: %d images, %d failed, %d annotations", job_id, state.done,
             state.failed, state.annotations)
    job_ended(store, rt.redis, rt.queue_prefix, record)
    if rt.redis is not None:  # neither raises: metrics must not fail a finished job
        remember(rt.redis, rt.queue_prefix, record, pool.name, pool.sha256, coco,
                 state.done, rt.calibrate_min_images)
        record_job(rt.redis, rt.queue_prefix, teacher=pool.name, tta=record.request.tta,
                   images_done=state.done, images_failed=state.failed,
                   seconds=time.monotonic() - started, coco=coco,
                   images_timed=sum(inferred), job_id=job_id)
    return {"status": JobStatus.FINISHED, "done": state.done, "failed": state.failed,
            "annotations": state.annotations}


def plan_job(plan_id: str) -> dict[str, Any]:
    """Splits a by-reference request into batch jobs (:func:`jobs.plans.run_plan`)."""
    rt = runtime.current()
    if rt.references is None or rt.redis is None:
        raise RuntimeError("plans run in `distill worker`, which reads references")
    with job_context(plan_id):
        state = run_plan(rt.store, rt.redis, rt.queue_prefix, plan_id, rt.references)
    return {"status": state.status, "images": state.listed, "jobs": state.jobs}


def _pool_for(rt: runtime.Runtime, record: JobRecord) -> runtime.TeacherPool | None:
    """The loaded teacher a job is for (a record without a name: the only one served)."""
    if not record.teacher and len(rt.teachers) == 1:
        return next(iter(rt.teachers.values()))
    return rt.teachers.get(record.teacher)


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
    if state.status == JobStatus.FINISHED:
        return
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
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
    state.fail(error)
    store.save_state(job_id, state)
    rt, record = runtime.installed(), store.load_job(job_id)
    if rt is not None and record is not None:
        job_ended(store, rt.redis, rt.queue_prefix, record)
    return {"status": JobStatus.FAILED, "error": error}


class _Every:
    """Calling it answers True at most once per ``seconds`` (always, for 0)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


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

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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from distill.annotate import Teacher, infer_to_log, score_floor
from distill.coco import objects
from distill.errors import DistillError
from distill.interrupt import interruptible
from distill.pseudolabels import finalize
from jobs.calibration import remember
from jobs.datasets import job_ended
from jobs.logs import job_context
from jobs.metrics import DRAWN, record_job
from jobs.plans import run_plan
from jobs.predlog import open_log, seal_log
from jobs.records import JobRecord, JobState, JobStatus
from jobs.selection import selection_for
from jobs.storage import StorageUnavailableError
from jobs.store import JobStore
from worker import runtime
from worker.inputs import cached, image_sources
from worker.progress import JobCancelledError, Progress, check_not_cancelled

log = logging.getLogger(__name__)


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
    """The job's steps: start (record, teacher), annotate into the log, finish (the COCO
    file, the state, the metrics). A cancellation discards what this run wrote; a
    deterministic failure fails the job; anything else is left for RQ to retry."""
    started = time.monotonic()  # this attempt's time, for the seconds-per-image metric
    job = _start(rt, job_id)
    if not isinstance(job, _Started):
        return job
    progress = Progress(rt.store, job_id, job.state,
                         open_log(rt.store, job_id, cache), {f.name for f in job.record.files})
    try:
        coco, inferred = _annotate(rt, job, progress, cache)
    except JobCancelledError:
        _discard(rt.store, job_id)
        return {"status": JobStatus.CANCELLED}
    except DistillError as exc:
        if isinstance(exc, StorageUnavailableError):
            raise  # the bucket is away: RQ retries the attempt, which resumes from the log
        return _fail(rt.store, job_id, job.state, str(exc))
    except Exception as exc:
        # Recorded so that the API can show why an attempt failed; RQ decides on a retry.
        job.state.error = f"attempt {job.state.attempts} failed: {type(exc).__name__}: {exc}"
        with contextlib.suppress(StorageUnavailableError):
            rt.store.save_state(job_id, job.state)
        raise
    return _finish(rt, job, progress, coco, inferred, time.monotonic() - started)


@dataclass
class _Started:
    """A job this worker runs: its record, its state, its teacher's pool and teacher."""

    record: JobRecord
    state: JobState
    pool: runtime.TeacherPool
    teacher: Teacher


def _start(rt: runtime.Runtime, job_id: str) -> _Started | dict[str, Any]:
    """Loads the job and its teacher and counts the attempt; the job's outcome instead
    when it ends here (deleted or cancelled, a repeated delivery of a finished job, a
    teacher this worker does not serve or whose checkpoint changed mid-job)."""
    store = rt.store
    record = store.load_job(job_id)
    if record is None or record.cancelled_at is not None:
        log.info("job %s was deleted or cancelled before it started", job_id)
        if record is not None:
            _stopped(store, job_id)  # an earlier attempt's state says it runs
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
    return _Started(record, state, pool, teacher)


def _annotate(rt: runtime.Runtime, job: _Started, progress: Progress, cache: Path
              ) -> tuple[dict[str, Any], tuple[int, int]]:
    """Runs the teacher over the images not in the log yet, then selects from the whole
    log; returns the COCO file and (images done, failed) by this run."""
    record, teacher, store = job.record, job.teacher, rt.store
    selection, source = selection_for(record.request)
    # Cancellation is checked after every batch and, within one, between passes.
    with interruptible(lambda: check_not_cancelled(store, record.id),
                       every_s=max(0.5, progress.every)):
        # A dataset is calibrated over all its jobs: no per-job floor (annotate.py).
        floor = None if record.dataset else score_floor(teacher, selection)
        sources = image_sources(store, record, set(progress.outcomes), cache,
                                progress.on_failed, rt.references)
        inferred = infer_to_log(teacher, sources, progress.log_file,
                                on_batch=progress.on_batch, floor=floor,
                                prompts={f.name: f.boxes for f in record.files if f.boxes})
    progress.report()
    names = {f.name for f in record.files}
    given = record.request.thresholds_from
    coco = finalize(lambda: progress.log_file.iter_records(names), teacher.card, selection,
                    {**teacher.info(), "teacher_name": job.pool.name,
                     "selection_source": source,
                     **({"thresholds_from": given} if given else {})})
    return coco, inferred


def _finish(rt: runtime.Runtime, job: _Started, progress: Progress, coco: dict[str, Any],
            inferred: tuple[int, int], seconds: float) -> dict[str, Any]:
    """Seals the log, stores the COCO file and the finished state, then tells the dataset
    and the metrics (neither of which may fail a finished job)."""
    store, record, state, job_id = rt.store, job.record, job.state, job.record.id
    seal_log(progress.log_file)
    store.save_json(store.annotations_key(job_id), coco)
    state.finish(len(objects(coco)), coco["info"].get("categories_report"))
    store.save_state(job_id, state)
    log.info("job %s finished: %d images, %d failed, %d annotations", job_id, state.done,
             state.failed, state.annotations)
    job_ended(store, rt.redis, rt.queue_prefix, record)
    if rt.redis is not None:
        remember(rt.redis, rt.queue_prefix, record, job.pool.name, job.pool.sha256, coco,
                 state.done, rt.calibrate_min_images)
        # Keypoints placed in drawn boxes cost another time per image than detection.
        tta = DRAWN if any(f.boxes for f in record.files) else record.request.tta
        record_job(rt.redis, rt.queue_prefix, teacher=job.pool.name, tta=tta,
                   images_done=state.done, images_failed=state.failed, seconds=seconds,
                   coco=coco, images_timed=sum(inferred), job_id=job_id)
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


def _fail(store: JobStore, job_id: str, state: JobState, error: str) -> dict[str, Any]:
    log.warning("job %s failed: %s", job_id, error)
    state.fail(error)
    store.save_state(job_id, state)
    rt, record = runtime.installed(), store.load_job(job_id)
    if rt is not None and record is not None:
        job_ended(store, rt.redis, rt.queue_prefix, record)
    return {"status": JobStatus.FAILED, "error": error}


def _discard(store: JobStore, job_id: str) -> None:
    """Removes what this run wrote after a cancellation (appending may have recreated files)."""
    if store.load_job(job_id) is None:
        store.delete_job(job_id)
    else:
        store.delete_artifacts(job_id)
        _stopped(store, job_id)
    log.info("job %s cancelled; its artifacts are removed", job_id)


def _stopped(store: JobStore, job_id: str) -> None:
    """Ends a cancelled job's state that still says it runs: nothing will change it any
    more (counts remember it, :mod:`jobs.tallies`)."""
    state = store.load_state(job_id)
    if state is not None and not state.is_terminal:
        state.stop()
        store.save_state(job_id, state)

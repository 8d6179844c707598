"""The queue contract between the API and the workers.

One RQ queue per registered teacher (``<prefix>.<teacher>``), one RQ job per
uploaded batch, with the store's job id as the RQ job id and no other
argument: everything else is in ``job.json``. Workers announce themselves
(and the teacher they serve) under ``distill:<queue>:workers:*`` with a TTL
that their heartbeat renews, so the API can list live workers per teacher and
tell whether anyone is there to run a job.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from jobs.keys import redis_key

log = logging.getLogger(__name__)

TASK = "worker.tasks.annotate_job"
PLAN_TASK = "worker.tasks.plan_job"
FAILURE_CALLBACK = "worker.tasks.on_job_failed"
RESULT_TTL_S = 24 * 3600  # the store keeps outcomes; Redis needs them only briefly


def queue_name(prefix: str, teacher: str) -> str:
    """The RQ queue of a teacher's jobs."""
    return f"{prefix}.{teacher}"


def plan_queue(prefix: str) -> str:
    """The queue of plans (by-reference requests split into batches), which every worker
    serves; ``:`` never occurs in a teacher's name, so no teacher's queue is called so."""
    return f"{prefix}.:plans"


def enqueue_plan(redis: Redis, prefix: str, plan_id: str, *, timeout_s: int, retries: int,
                 cancel: bool = False) -> Job:
    """Queues the planning of a by-reference request (it resumes where a lost run stopped),
    or with ``cancel`` a run that only cancels the batches of a cancelled plan (its own RQ
    job, so that a plan still running is not replaced in Redis)."""
    job_id = f"plan-{plan_id}-cancel" if cancel else f"plan-{plan_id}"
    return Queue(plan_queue(prefix), connection=redis).enqueue_call(
        PLAN_TASK, args=(plan_id,), job_id=job_id, timeout=timeout_s,
        result_ttl=RESULT_TTL_S, retry=Retry(max=retries) if retries > 0 else None,
        description=f"{'cancel ' if cancel else ''}plan {plan_id}")


def presence_prefix(queue: str) -> str:
    """Key prefix of the live-worker announcements of a queue."""
    return redis_key(queue, "workers", "")


def enqueue(redis: Redis, queue: str, job_id: str, *, timeout_s: int, retries: int,
            at_front: bool = False) -> Job:
    """Queues the annotation of a stored job; ``at_front`` puts it before the waiting
    bulk jobs (an interactive request, such as Label Studio's, that someone waits for).

    ``Retry`` covers both a raised exception and an abandoned job (its worker
    died): RQ's StartedJobRegistry cleanup requeues abandoned jobs that have
    retries left, and the task resumes from the prediction log.
    """
    q = Queue(queue, connection=redis)
    return q.enqueue_call(
        TASK, args=(job_id,), job_id=job_id, timeout=timeout_s, result_ttl=RESULT_TTL_S,
        retry=Retry(max=retries) if retries > 0 else None,
        on_failure=Callback(FAILURE_CALLBACK, timeout=30),
        description=f"annotate job {job_id}", at_front=at_front)


WAITING = ("queued", "scheduled", "deferred")  # RQ's statuses of a job not yet running


def rq_status(redis: Redis, job_id: str) -> str | None:
    """RQ's view of a job (queued, started, failed, ...), None when Redis does not know it."""
    try:
        return str(Job.fetch(job_id, connection=redis).get_status(refresh=False))
    except NoSuchJobError:
        return None


def rq_statuses(redis: Redis, job_ids: list[str]) -> dict[str, str | None]:
    """RQ's view of many jobs in one round trip (None: Redis does not know the job)."""
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        found = pipe.execute()
    return {job_id: _text(raw) for job_id, raw in zip(job_ids, found, strict=True)}


def _text(raw: bytes | str | None) -> str | None:
    return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))


def rq_never_started(redis: Redis, job_ids: list[str]) -> set[str]:
    """The jobs RQ holds waiting (queued, scheduled, deferred) that no worker ever
    started, in one round trip: a count needs nothing else of them (a job queued again
    for a retry keeps its first start, and has progress to read)."""
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "started_at")
        found = pipe.execute()
    return {job_id for job_id, (status, started) in zip(job_ids, found, strict=True)
            if _text(status) in WAITING and not started}


def rq_failure(redis: Redis, job_id: str) -> str | None:
    """The last line of RQ's recorded failure of a job, if any."""
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return None
    exc = job.exc_info or ""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def cancel(redis: Redis, job_id: str) -> None:
    """Takes a job off the queue if it has not started; a running one stops cooperatively
    (its worker checks the store after every batch)."""
    try:
        job = Job.fetch(job_id, connection=redis)
        if job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass


def announce(redis: Redis, queue: str, worker: str, payload: dict[str, Any], ttl_s: int) -> None:
    """Registers (or renews) a live worker and the teacher it serves."""
    redis.set(presence_prefix(queue) + worker, json.dumps(payload), ex=max(1, int(ttl_s)))


def withdraw(redis: Redis, queue: str, worker: str) -> None:
    """Removes a worker's announcement (clean shutdown)."""
    with contextlib.suppress(RedisError):
        redis.delete(presence_prefix(queue) + worker)


def live_workers(redis: Redis, queue: str) -> list[dict[str, Any]]:
    """Announcements of the workers whose heartbeat is current."""
    keys = sorted(redis.scan_iter(match=presence_prefix(queue) + "*", count=500))
    if not keys:
        return []
    out = []
    for raw in redis.mget(keys):
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            out.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("ignoring a malformed worker announcement")
    return out

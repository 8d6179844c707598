"""Cancelling stored jobs: what ``DELETE /jobs/{id}`` does to a queued or running job, for
one job or for many (the batches of a cancelled plan).

A cancelled job's record gets ``cancelled_at`` (its worker checks the record between
batches and stops; a worker that has not started it yet skips it), it is taken off
its RQ queue, and its images and outputs are deleted; the record stays, so the job is
listed as cancelled. A job that is already over is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from redis import Redis

from jobs import queueing, tallies
from jobs.ledger import job_over
from jobs.records import JobRecord, is_over, utcnow
from jobs.store import JobStore

IN_FLIGHT = 16  # a bucket's latency, not its bandwidth, bounds a sweep over many jobs


def cancel_job(store: JobStore, redis: Redis, queue: str, record: JobRecord) -> None:
    """Cancels one job that is not over (the caller checked); ``queue`` is the service's
    queue prefix (the key's pending images are kept under it)."""
    if record.cancelled_at is None:
        record.cancelled_at = utcnow()
        store.save_job(record)  # the worker checks this between batches
    tallies.unnote(redis, queue, record)
    queueing.cancel(redis, record.id)
    job_over(redis, queue, record.owner, record.id)  # after the record says so: see ledger
    store.delete_artifacts(record.id)


def cancel_jobs(store: JobStore, redis: Redis, queue: str, job_ids: Iterable[str], *,
                plan: str | None = None) -> int:
    """Cancels those of the jobs that exist and are not over (with ``plan``, only the batches
    of that plan); returns how many. Safe to run twice, or in two processes at once: each
    step is idempotent."""
    def one(job_id: str) -> bool:
        record = store.load_job(job_id)
        if record is None or (plan is not None and record.plan != plan):
            return False
        if is_over(record, store.load_state(job_id)):
            return False
        cancel_job(store, redis, queue, record)
        return True

    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="cancel") as pool:
        return sum(pool.map(one, job_ids))

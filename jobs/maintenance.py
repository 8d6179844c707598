"""Keeping the queue and the store healthy: lost jobs re-queued, old jobs deleted.

The store, not Redis, is the record of what was accepted. If Redis loses its
data (a restart without persistence, a failover), jobs that were accepted but
not finished are in no queue any more; :func:`requeue_lost_jobs` puts them
back, each on its teacher's queue. The API runs it at start-up and every
worker runs :func:`run_maintenance` periodically from its heartbeat thread,
so the queue heals itself without a restart. A Redis lock lets one process
at a time do it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from redis import Redis

from jobs import queueing, tallies
from jobs.datasets import forget_if_empty
from jobs.keys import redis_key
from jobs.ledger import remove_job
from jobs.records import ended_at, is_over, utcnow
from jobs.settings import Settings
from jobs.store import JobStore

log = logging.getLogger(__name__)

_NOT_OVER = {"queued", "started", "scheduled", "deferred"}  # RQ's words for it
# Resolves a job's teacher name ("" in old records) to a registered one, or raises.
ResolveTeacher = Callable[[str | None], str]


def requeue_lost_jobs(store: JobStore, redis: Redis, settings: Settings,
                      resolve: ResolveTeacher) -> int:
    """Queues again the unfinished jobs that Redis no longer knows; returns how many.

    A job whose teacher is no longer registered stays in the store, untouched,
    and is logged. A job accepted less than ``requeue_after_s`` ago is left alone:
    the API may be between storing it and queueing it.
    """
    count = 0
    settled = utcnow() - timedelta(seconds=settings.requeue_after_s)
    # Redis is asked first, in one round trip: it knows nearly every job (queued, running
    # or ended within a day), so only the few it lost are read from the store, not every
    # job kept (a plan of 100,000 images makes 1,563 while a worker maintains).
    statuses = queueing.rq_statuses(redis, store.job_ids())
    for record in store.list_jobs(i for i, s in statuses.items() if s is None):
        if record.created_at > settled:
            continue
        state = store.load_state(record.id)
        if is_over(record, state):
            continue
        if queueing.rq_status(redis, record.id) is not None:  # queued since we asked
            continue
        try:
            teacher = resolve(record.teacher or None)
        except ValueError as exc:
            log.error("job %s cannot be requeued: %s", record.id, exc)
            continue
        tallies.unnote(redis, settings.queue, record)  # it may have run: counts read it
        queueing.enqueue(redis, queueing.queue_name(settings.queue, teacher), record.id,
                         timeout_s=record.timeout_s, retries=settings.job_retries)
        count += 1
    if count:
        log.warning("requeued %d accepted jobs that Redis had lost", count)
    return count


def delete_expired_jobs(store: JobStore, retention: timedelta, redis: Redis | None = None,
                        queue: str = "distill") -> int:
    """Deletes jobs that ended (finished, failed, cancelled) longer than ``retention`` ago,
    and the stored files of datasets left without a job; a queued or running job is never
    deleted, however old. With ``redis``, the jobs RQ holds as queued or running are not
    read at all (they cannot have ended long ago; a later run looks again), and what Redis
    keeps of a deleted job under the ``queue`` prefix goes with it (:mod:`jobs.ledger`)."""
    cutoff = utcnow() - retention
    deleted = 0
    datasets: set[tuple[str, str]] = set()
    ids = store.job_ids()
    if redis is not None:
        statuses = queueing.rq_statuses(redis, ids)
        ids = [i for i in ids if statuses[i] not in _NOT_OVER]
    for record in store.list_jobs(ids):
        ended = ended_at(record, store.load_state(record.id))
        if ended is not None and ended < cutoff:
            remove_job(store, redis, queue, record)
            deleted += 1
            if record.dataset is not None:
                datasets.add((record.owner, record.dataset))
    for owner, dataset in sorted(datasets):  # their stored files go with their last job
        forget_if_empty(store, owner, dataset)
    if deleted:
        log.info("retention: deleted %d jobs that ended before %s", deleted,
                 cutoff.isoformat(timespec="seconds"))
    return deleted


def run_maintenance(store: JobStore, redis: Redis, settings: Settings,
                    resolve: ResolveTeacher) -> bool:
    """Both tasks, unless another process ran them within the interval; True if this did."""
    lock = redis_key(settings.queue, "maintenance")
    if not redis.set(lock, "1", nx=True, ex=max(1, int(settings.maintenance_interval_s))):
        return False
    requeue_lost_jobs(store, redis, settings, resolve)
    if settings.retention_days > 0:
        delete_expired_jobs(store, timedelta(days=settings.retention_days), redis,
                            settings.queue)
    return True

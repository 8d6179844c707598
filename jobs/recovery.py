"""Lost-job recovery: the store, not Redis, is the record of what was accepted.

If Redis loses its data (a restart without persistence, a failover), jobs
that were accepted but not finished are no longer in any queue; this puts
them back, each on its teacher's queue.
"""

from __future__ import annotations

import logging

from redis import Redis

from jobs import queueing
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.teachers import TeacherRegistry, UnknownTeacherError

log = logging.getLogger(__name__)


def requeue_lost_jobs(store: JobStore, redis: Redis, settings: Settings,
                      registry: TeacherRegistry) -> int:
    """Queues again the unfinished jobs that Redis no longer knows; returns how many.

    A lock lets only one of several API replicas do this at a time. A job whose
    teacher is no longer registered stays in the store, untouched, and is logged.
    """
    if not redis.set(f"distill:{settings.queue}:recovery", "1", nx=True, ex=60):
        return 0
    count = 0
    for record in store.list_jobs():
        state = store.load_state(record.id)
        if record.cancelled_at is not None or (state is not None and state.is_terminal):
            continue
        if queueing.rq_status(redis, record.id) is not None:
            continue
        try:
            teacher = registry.resolve(record.teacher or None)
        except UnknownTeacherError as exc:
            log.error("job %s cannot be requeued: %s", record.id, exc)
            continue
        queueing.enqueue(redis, queueing.queue_name(settings.queue, teacher), record.id,
                         timeout_s=record.timeout_s, retries=settings.job_retries)
        count += 1
    if count:
        log.warning("requeued %d accepted jobs that Redis had lost", count)
    return count

"""A job as the API reports it: the store's record and state, cross-checked with RQ.

The store is the source of truth (it survives Redis and API restarts); RQ
adds what only it knows: that a job is back in the queue after a retry, or
that it failed for good without its worker writing anything (the worker was
killed and no retries were left). Redis also says whether any worker serves
the job's teacher, which is why a queued job may be waiting.
"""

from __future__ import annotations

from collections import Counter

from redis import Redis
from redis.exceptions import RedisError

from jobs import queueing
from jobs.records import JobRecord, JobState, JobStatus, is_over
from jobs.store import JobStore
from service.models import JobLinks, JobOut, Progress

_QUEUED_IN_RQ = ("queued", "scheduled", "deferred")


def links(job_id: str) -> JobLinks:
    """Relative URLs of a job (valid behind any proxy prefix-free mount)."""
    return JobLinks(status=f"/jobs/{job_id}", annotations=f"/jobs/{job_id}/annotations")


def job_status(record: JobRecord, state: JobState | None, rq: str | None) -> JobStatus:
    """Combines the store's view and RQ's into one status."""
    if record.cancelled_at is not None:
        return JobStatus.CANCELLED
    if state is not None and state.is_terminal:
        return state.status
    if rq == "failed":
        return JobStatus.FAILED
    if rq in _QUEUED_IN_RQ:
        return JobStatus.QUEUED  # also a job requeued after its worker died
    if state is not None or rq == "started":
        return JobStatus.RUNNING
    return JobStatus.QUEUED


def job_view(store: JobStore, redis: Redis | None, record: JobRecord, queue_prefix: str
             ) -> JobOut:
    """The full status of one job; ``redis`` None (or unreachable) uses the store alone."""
    state = store.load_state(record.id)
    rq: str | None = None
    if redis is not None and not is_over(record, state):
        try:
            rq = queueing.rq_status(redis, record.id)
        except RedisError:
            rq = None
    status = job_status(record, state, rq)
    error = state.error if state else None
    if status == JobStatus.FAILED and error is None and redis is not None:
        try:
            error = queueing.rq_failure(redis, record.id) or "failed in the queue"
        except RedisError:
            error = "failed in the queue"
    waiting = _waiting_for(redis, record, queue_prefix) if status == JobStatus.QUEUED else None
    st = state or JobState(total=len(record.files))
    return JobOut(
        id=record.id, status=status, dataset=record.dataset, teacher=record.teacher,
        teacher_sha256=st.teacher_sha256 or record.teacher_sha256, waiting_for=waiting,
        created_at=record.created_at,
        started_at=st.started_at, updated_at=st.updated_at, finished_at=st.finished_at,
        cancelled_at=record.cancelled_at,
        progress=Progress(done=st.done, failed=st.failed, total=len(record.files)),
        attempts=st.attempts, errors=st.errors, error=error, annotations=st.annotations,
        categories_report=st.categories_report,
        request=record.request, links=links(record.id))


def tally(views: list[JobOut]) -> tuple[dict[str, int], Progress]:
    """Jobs counted by status, and their images annotated, failed and sent."""
    return (dict(Counter(str(v.status) for v in views)),
            Progress(done=sum(v.progress.done for v in views),
                     failed=sum(v.progress.failed for v in views),
                     total=sum(v.progress.total for v in views)))


def _waiting_for(redis: Redis | None, record: JobRecord, queue_prefix: str) -> str | None:
    """Says so when no live worker serves the job's teacher (the job waits for one)."""
    if redis is None or not record.teacher:
        return None
    queue = queueing.queue_name(queue_prefix, record.teacher)
    try:
        if queueing.live_workers(redis, queue):
            return None
    except RedisError:
        return None
    return (f"a worker of teacher {record.teacher!r}: none is running; start one with "
            f"`distill worker --teacher {record.teacher}`")

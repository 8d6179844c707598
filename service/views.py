"""A job as the API reports it: the store's record and state, cross-checked with RQ.

The store is the source of truth (it survives Redis and API restarts); RQ
adds what only it knows: that a job is back in the queue after a retry, or
that it failed for good without its worker writing anything (the worker was
killed and no retries were left). Redis also says whether any worker serves
the job's teacher, which is why a queued job may be waiting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from jobs import queueing, tallies
from jobs.records import JobRecord, JobState, JobStatus, is_over
from jobs.storage import read_all
from jobs.store import DamagedRecordError, JobStore
from service.models import JobLinks, JobOut, Progress


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
    if rq in queueing.WAITING:
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


@dataclass
class Tally:
    """Jobs of a dataset (or of one plan in it) counted by status, and their images."""

    jobs: int
    statuses: dict[str, int]
    images: Progress


def tally(store: JobStore, redis: Redis | None, queue_prefix: str, owner: str, dataset: str,
          plan: str | None = None) -> Tally | None:
    """The dataset's jobs (or only ``plan``'s batches) counted; None when it holds none.

    Ended jobs come from what Redis remembers of them, and jobs waiting in the queue that
    never started from their noted facts and RQ (:mod:`jobs.tallies`); only the others
    are read from the store (side by side from a bucket, which answers each read in
    milliseconds), and what they show is noted for the next count.
    """
    # Redis first: facts are noted after a job's index entry, so every one seen here
    # belongs to a job the index lists (none is forgotten as deleted while committed).
    known = tallies.recall(redis, queue_prefix, owner, dataset)
    noted = tallies.facts(redis, queue_prefix, owner, dataset)
    ids = store.index_ids(owner, dataset)
    waiting = _never_started(redis, [i for i in ids if i in noted and i not in known])
    read = _read(store, redis, queue_prefix, owner,
                 [i for i in ids if i not in known and i not in waiting])
    listed = set(ids)
    tallies.remember(redis, queue_prefix, owner, dataset,
                     {i: e for i, e, over, _ in read if over},
                     noted={i: tallies.Facts(plan=e.plan, total=e.total)
                            for i, e, over, started in read
                            if not over and not started and i not in noted},
                     forget={i for i in [*known, *noted] if i not in listed})
    queued = [(i, tallies.Ended(status=JobStatus.QUEUED, plan=noted[i].plan,
                                total=noted[i].total)) for i in waiting]
    counted = [e for i, e in [*known.items(), *queued, *((i, e) for i, e, _, _ in read)]
               if i in listed and (plan is None or e.plan == plan)]
    if not counted:
        return None
    return Tally(jobs=len(counted), statuses=dict(Counter(str(e.status) for e in counted)),
                 images=Progress(done=sum(e.done for e in counted),
                                 failed=sum(e.failed for e in counted),
                                 total=sum(e.total for e in counted)))


def _read(store: JobStore, redis: Redis | None, queue_prefix: str, owner: str,
          job_ids: list[str]) -> list[tuple[str, tallies.Ended, bool, bool]]:
    """What :func:`_counted` says of each job (gone and damaged ones left out)."""
    def count(job_id: str) -> tuple[str, tallies.Ended, bool, bool] | None:
        return _counted(store, redis, queue_prefix, owner, job_id)

    return [r for r in read_all(store.storage, count, job_ids) if r is not None]


def _never_started(redis: Redis | None, job_ids: list[str]) -> set[str]:
    """Jobs waiting in RQ that never started: queued, nothing to read of them."""
    if redis is None or not job_ids:
        return set()
    try:
        return queueing.rq_never_started(redis, job_ids)
    except RedisError:
        return set()


def _counted(store: JobStore, redis: Redis | None, queue_prefix: str, owner: str,
             job_id: str) -> tuple[str, tallies.Ended, bool, bool] | None:
    """One job's status and images as a count sees them, whether they are final and
    whether it ever started; None when it is gone or damaged. Final means over by the
    store's word (ended by its worker, or cancelled and not running): a job RQ alone
    calls failed (its worker died with no retries left) is queued again by maintenance
    once RQ forgets it. Only the facts of a job that never started are noted: one that
    ran has progress to read, even when RQ has it queued again."""
    try:
        record = store.load_job(job_id)
    except DamagedRecordError:
        return None
    if record is None or record.owner != owner:
        return None
    view = job_view(store, redis, record, queue_prefix)
    over = view.finished_at is not None or (
        record.cancelled_at is not None and view.started_at is None)
    return (job_id, tallies.Ended(status=view.status, plan=record.plan,
                                  done=view.progress.done, failed=view.progress.failed,
                                  total=view.progress.total),
            over, view.started_at is not None)


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

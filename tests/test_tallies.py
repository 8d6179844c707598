"""A dataset's jobs counted (``service.views.tally``, what ``GET /datasets/{name}`` and
``GET /plans/{id}?batches=true`` answer): ended jobs come from Redis after one read,
running ones are read again each time, deleted ones drop out, a plan counts only its
batches, and a lost or damaged hash is rebuilt from the store. A real redis-server and a
real store (a local directory)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis

from jobs import tallies
from jobs.keys import redis_key
from jobs.records import JobRecord, JobRequest, JobState, JobStatus, StoredFile, utcnow
from jobs.storage import LocalStorage
from jobs.store import JobStore
from service.views import tally
from tests.conftest import RedisServer

PREFIX = "tally-test"


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis(port=redis_server.port)
    yield client
    for key in client.scan_iter(f"distill:{PREFIX}:*"):
        client.delete(key)


def _job(store: JobStore, n: int, images: int, state: JobState | None, *,
         plan: str | None = None, cancelled: bool = False) -> JobRecord:
    created = utcnow() + timedelta(seconds=n)
    record = JobRecord(
        id=f"{n:032x}", owner="o", dataset="ds", created_at=created,
        files=[StoredFile(name=f"{n}-{k}.jpg", stored="", bytes=1, width=8, height=8,
                          sha256="0" * 64) for k in range(images)],
        request=JobRequest(tta="identity", fusion="vote"), timeout_s=60, plan=plan,
        cancelled_at=created if cancelled else None)
    store.commit(store.staging(record.id), record)
    if state is not None:
        store.save_state(record.id, state)
    return record


def _state(status: JobStatus, done: int, failed: int = 0) -> JobState:
    """As the worker writes it (finish and fail stamp the end)."""
    return JobState(status=status, total=done + failed, done=done, failed=failed,
                    finished_at=utcnow() if status.is_terminal else None)


def _remembered(redis: Redis) -> set[str]:
    return {k.decode() for k in redis.hkeys(redis_key(PREFIX, "dataset", "o", "ds",
                                                      "ended-jobs"))}


def test_ended_jobs_are_counted_from_redis_running_ones_from_the_store(
        tmp_path: Path, redis: Redis) -> None:
    store = JobStore(LocalStorage(tmp_path / "store"))
    finished = _job(store, 1, 4, _state(JobStatus.FINISHED, 3, 1))
    failed = _job(store, 2, 2, _state(JobStatus.FAILED, 0))
    running = _job(store, 3, 5, _state(JobStatus.RUNNING, 2))
    cancelled = _job(store, 4, 3, None, cancelled=True)

    first = tally(store, redis, PREFIX, "o", "ds")
    assert first is not None
    assert first.jobs == 4
    assert first.statuses == {"finished": 1, "failed": 1, "running": 1, "cancelled": 1}
    assert (first.images.done, first.images.failed, first.images.total) == (5, 1, 14)
    assert _remembered(redis) == {finished.id, failed.id, cancelled.id}

    # The ended jobs' states are not read again: changing them in the store changes
    # nothing (nothing legitimate changes an ended job); the running one is read again.
    store.save_state(finished.id, _state(JobStatus.FINISHED, 0))
    store.save_state(running.id, _state(JobStatus.FINISHED, 5))
    second = tally(store, redis, PREFIX, "o", "ds")
    assert second is not None
    assert second.statuses == {"finished": 2, "failed": 1, "cancelled": 1}
    assert (second.images.done, second.images.total) == (8, 14)
    assert _remembered(redis) == {finished.id, failed.id, cancelled.id, running.id}

    # A deleted job leaves the count and the hash.
    store.delete_job(failed.id)
    third = tally(store, redis, PREFIX, "o", "ds")
    assert third is not None and third.jobs == 3 and "failed" not in third.statuses
    assert failed.id not in _remembered(redis)

    # Redis lost the hash: the store gives the same count again (here, the finished job's
    # state as changed above), and the hash is written again.
    redis.delete(redis_key(PREFIX, "dataset", "o", "ds", "ended-jobs"))
    fourth = tally(store, redis, PREFIX, "o", "ds")
    assert fourth is not None and fourth.statuses == {"finished": 2, "cancelled": 1}
    assert fourth.images.done == 5
    assert _remembered(redis) == {finished.id, running.id, cancelled.id}


def test_a_plan_counts_its_own_batches_and_no_redis_reads_everything(
        tmp_path: Path, redis: Redis) -> None:
    store = JobStore(LocalStorage(tmp_path / "store"))
    _job(store, 1, 2, _state(JobStatus.FINISHED, 2), plan="p1")
    _job(store, 2, 3, _state(JobStatus.FINISHED, 3), plan="p2")
    _job(store, 3, 4, _state(JobStatus.RUNNING, 1), plan="p1")
    _job(store, 4, 1, _state(JobStatus.FINISHED, 1))  # an upload into the same dataset
    for client in (redis, redis, None):  # counted, from Redis, then without Redis
        p1 = tally(store, client, PREFIX, "o", "ds", plan="p1")
        assert p1 is not None
        assert (p1.jobs, p1.statuses) == (2, {"finished": 1, "running": 1})
        assert (p1.images.done, p1.images.total) == (3, 6)
        everything = tally(store, client, PREFIX, "o", "ds")
        assert everything is not None and everything.jobs == 4
    assert tally(store, redis, PREFIX, "o", "ds", plan="p3") is None
    assert tally(store, redis, PREFIX, "o", "other") is None


def test_a_damaged_entry_is_read_again(tmp_path: Path, redis: Redis) -> None:
    store = JobStore(LocalStorage(tmp_path / "store"))
    job = _job(store, 1, 2, _state(JobStatus.FINISHED, 2))
    key = redis_key(PREFIX, "dataset", "o", "ds", "ended-jobs")
    redis.hset(key, job.id, b"{not json")
    counted = tally(store, redis, PREFIX, "o", "ds")
    assert counted is not None and counted.statuses == {"finished": 1}
    assert tallies.recall(redis, PREFIX, "o", "ds")[job.id].done == 2


def test_jobs_waiting_in_the_queue_are_counted_without_reading_them(
        tmp_path: Path, redis: Redis) -> None:
    """A committed job's facts are noted and RQ says it waits, never started: the count
    reads nothing of it (here its record is damaged after the commit, and it still
    counts as queued with its images); once RQ has started it, it is read again."""
    from rq.job import Job

    from jobs import queueing

    store = JobStore(LocalStorage(tmp_path / "store"))
    waiting = _job(store, 1, 6, None, plan="p1")
    tallies.accepted(redis, PREFIX, waiting)
    queueing.enqueue(redis, f"{PREFIX}-q", waiting.id, timeout_s=60, retries=0)
    store.storage.put(store.job_key(waiting.id, "job.json"), b"{damaged")
    counted = tally(store, redis, PREFIX, "o", "ds", plan="p1")
    assert counted is not None
    assert (counted.jobs, counted.statuses, counted.images.total) == (1, {"queued": 1}, 6)
    # Started once (a retry queues it again with its first start kept): read again, and
    # a damaged record is left out of the count.
    redis.hset(Job.key_for(waiting.id), "started_at", "2026-12-07T00:00:00.000000Z")
    assert tally(store, redis, PREFIX, "o", "ds") is None
    queueing.cancel(redis, waiting.id)


def test_a_listing_leaves_out_unread_what_it_is_told_to(tmp_path: Path) -> None:
    read: list[str] = []

    class Counting(LocalStorage):
        def get(self, key: str) -> bytes | None:
            read.append(key)
            return super().get(key)

    store = JobStore(Counting(tmp_path / "store"))
    kept, skipped = _job(store, 1, 1, None), _job(store, 2, 1, None)
    listed = [r.id for _, r in store.list_owner_jobs("o", dataset="ds",
                                                      skip=lambda i: i == skipped.id)]
    assert listed == [kept.id]
    assert any(kept.id in k for k in read) and not any(skipped.id in k for k in read)

"""The quota and naming reads of ``POST /annotate`` from Redis (:mod:`jobs.ledger`), on a
real Redis and both store backends (a local directory, moto's S3 server).

Each answer is compared with the full scan of the store it replaces (kept here as the
reference), across commits, finishes, cancellations, deletions, a lost removal and a
flushed Redis; and the store reads of one request are counted to show they no longer
grow with the key's finished jobs.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from redis import Redis

from jobs import submit
from jobs.cancel import cancel_job
from jobs.datasets import job_ended
from jobs.ledger import Taken, job_accepted, job_removed, pending_images, remove_job, taken_names
from jobs.records import (
    JobRecord,
    JobRequest,
    JobState,
    JobStatus,
    StoredFile,
    is_over,
    new_job_id,
    utcnow,
)
from jobs.s3 import S3Storage
from jobs.storage import LocalStorage, Storage
from jobs.store import JobStore
from jobs.submit import Upload, assign_names, commit_job, name_uploads
from tests.conftest import RedisServer, S3Server

OWNER = "owner1"


class CountingStorage(Storage):
    """A storage that counts the reads made through it (and delegates everything)."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.reads = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        return self.inner.get(key)

    def chunks(self, key: str, size: int = 1 << 20) -> Iterator[bytes] | None:
        self.reads += 1
        return self.inner.chunks(key, size)

    def exists(self, key: str) -> bool:
        self.reads += 1
        return self.inner.exists(key)

    def children(self, prefix: str) -> list[str]:
        self.reads += 1
        return self.inner.children(prefix)

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_tree(self, prefix: str) -> None:
        self.inner.delete_tree(prefix)

    def download(self, key: str, path: Path) -> bool:
        self.reads += 1
        return self.inner.download(key, path)

    def staging(self, key: str) -> str:
        return self.inner.staging(key)

    def publish(self, staging: str, key: str) -> None:
        self.inner.publish(staging, key)

    def local_path(self, key: str) -> Path | None:
        return self.inner.local_path(key)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "local":
        return JobStore(CountingStorage(LocalStorage(tmp_path / "store")))
    server: S3Server = request.getfixturevalue("s3_server")
    return JobStore(CountingStorage(S3Storage(f"s3://{server.bucket()}/svc",
                                              client=server.client(), retry_s=1)))


@pytest.fixture()
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis(port=redis_server.port)
    yield client
    client.close()


@pytest.fixture()
def queue() -> str:
    return f"q{uuid.uuid4().hex[:8]}"  # a fresh key space per test


# -- the full scans these reads replace (the code before jobs.ledger) ---------------------
def old_pending(store: JobStore, owner: str) -> int:
    count = 0
    for _, record in store.list_owner_jobs(owner):
        if not is_over(record, store.load_state(record.id)):
            count += len(record.files)
    return count


def old_taken(store: JobStore, owner: str, dataset: str) -> Taken:
    taken: Taken = {}
    for _, record in store.list_owner_jobs(owner, dataset=dataset):
        for f in record.files:
            taken.setdefault(f.name, (f.sha256, record.id))
    return taken


def _commit(store: JobStore, redis: Redis, queue: str, files: dict[str, str],
            dataset: str | None = "ds", age_s: int = 0) -> JobRecord:
    """A job holding ``files`` (name -> sha256), committed as submit does."""
    record = JobRecord(
        id=new_job_id(), owner=OWNER, dataset=dataset,
        created_at=utcnow() - timedelta(seconds=age_s), timeout_s=60,
        request=JobRequest(tta="identity", fusion="vote"),
        files=[StoredFile(name=n, stored=f"{s}.img", bytes=1, width=1, height=1, sha256=s)
               for n, s in files.items()])
    commit_job(store, redis, queue, store.staging(record.id), record)
    return record


def _finish(store: JobStore, redis: Redis, queue: str, record: JobRecord,
            *, tell: bool = True) -> None:
    """What the worker does at the end of a job (``tell``: False loses the removal)."""
    store.save_state(record.id, JobState(status=JobStatus.FINISHED, finished_at=utcnow()))
    if tell:
        job_ended(store, redis, queue, record)


def _upload(name: str, sha: str) -> Upload:
    return Upload(name=name, data=io.BytesIO(b""), size=1, width=1, height=1, sha256=sha)


def test_quota_answers_equal_the_full_scan(store: JobStore, redis: Redis, queue: str) -> None:
    def same() -> int:
        answer = pending_images(store, redis, queue, OWNER)
        assert answer == old_pending(store, OWNER)
        return answer

    assert same() == 0
    a = _commit(store, redis, queue, {"a.png": "1" * 64, "b.png": "2" * 64})
    b = _commit(store, redis, queue, {"c.png": "3" * 64}, dataset=None)
    c = _commit(store, redis, queue, {"d.png": "4" * 64, "e.png": "5" * 64, "f.png": "6" * 64})
    d = _commit(store, redis, queue, {"g.png": "7" * 64})
    assert same() == 7
    _finish(store, redis, queue, a)
    assert same() == 5
    cancel_job(store, redis, queue, b)
    assert same() == 4
    _finish(store, redis, queue, c, tell=False)  # a removal lost in a crash: healed
    assert same() == 1
    assert redis.hlen(f"distill:{queue}:pending:{OWNER}") == 1
    remove_job(store, redis, queue, d)  # deleted (not over): no longer counted
    assert same() == 0
    e = _commit(store, redis, queue, {"h.png": "8" * 64})
    redis.delete(f"distill:{queue}:pending:{OWNER}", f"distill:{queue}:pending:{OWNER}:built")
    assert same() == 1  # Redis lost it: rebuilt from the store, once
    assert redis.exists(f"distill:{queue}:pending:{OWNER}:built")
    _finish(store, redis, queue, e)
    assert same() == 0
    being = JobRecord(id=new_job_id(), owner=OWNER, dataset=None, created_at=utcnow(),
                      files=[], request=JobRequest(tta="identity", fusion="vote"), timeout_s=60)
    job_accepted(redis, queue, being)  # entered, its commit still under way: not yet counted
    assert same() == 0 and redis.hexists(f"distill:{queue}:pending:{OWNER}", being.id)


def test_names_equal_the_full_read(store: JobStore, redis: Redis, queue: str) -> None:
    def same(names: list[str] | None = None) -> Taken:
        old = old_taken(store, OWNER, "ds")
        answer = taken_names(store, redis, queue, OWNER, "ds", names)
        assert answer == (old if names is None else {n: old[n] for n in names if n in old})
        return answer

    assert same() == {}
    first = _commit(store, redis, queue, {"a.png": "1" * 64, "b.png": "2" * 64}, age_s=30)
    again = _commit(store, redis, queue, {"a.png": "1" * 64}, age_s=20)  # the same image
    _commit(store, redis, queue, {"a~11111111.png": "9" * 64, "x.png": "3" * 64}, age_s=10)
    _commit(store, redis, queue, {"a.png": "5" * 64}, dataset="other")
    assert same()["a.png"] == ("1" * 64, again.id)  # the newest holder, as listed
    batch = ["a.png", "b.png", "new.png", "a~11111111.png"]
    assert same(batch)["b.png"] == ("2" * 64, first.id)
    uploads = [_upload("a.png", "8" * 64), _upload("b.png", "2" * 64),
               _upload("new.png", "7" * 64), _upload("new.png", "7" * 64)]
    named, renamed = name_uploads(uploads, store, redis, queue, OWNER, "ds")
    assert [u.name for u in named] == ["a~88888888.png", "b.png", "new.png"]
    assert [(r.original, r.clashes_with_job) for r in renamed] == [("a.png", again.id)]
    _finish(store, redis, queue, again)
    remove_job(store, redis, queue, again)  # its name falls back to the older holder
    assert same(batch)["a.png"] == ("1" * 64, first.id)
    assert same() == old_taken(store, OWNER, "ds")
    redis.flushdb()  # Redis lost everything: rebuilt from the store
    assert same(batch) and redis.exists(f"distill:{queue}:names:{OWNER}:ds:built")
    assert same() == old_taken(store, OWNER, "ds")


def test_a_rebuild_overtaken_by_a_deletion_is_not_marked_built(
        store: JobStore, redis: Redis, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = _commit(store, redis, queue, {"a.png": "1" * 64})
    redis.delete(f"distill:{queue}:names:{OWNER}:ds:built")
    listing = store.list_owner_jobs

    def list_then_delete(owner: str, **kw: Any) -> Iterator[tuple[str, JobRecord]]:
        yield from list(listing(owner, **kw))
        remove_job(store, redis, queue, gone)  # deleted after the rebuild read it

    monkeypatch.setattr(store, "list_owner_jobs", list_then_delete)
    taken_names(store, redis, queue, OWNER, "ds")
    monkeypatch.undo()
    assert not redis.exists(f"distill:{queue}:names:{OWNER}:ds:built")
    assert taken_names(store, redis, queue, OWNER, "ds") == {}


@pytest.mark.parametrize("finished", [2, 200])
def test_a_requests_reads_do_not_grow_with_finished_jobs(
        finished: int, tmp_path: Path, redis: Redis, queue: str) -> None:
    counting = CountingStorage(LocalStorage(tmp_path / "store"))
    store = JobStore(counting)
    for n in range(finished):
        _finish(store, redis, queue, _commit(store, redis, queue, {f"{n}.png": f"{n:064x}"}))
    running = _commit(store, redis, queue, {"run.png": "f" * 64})
    batch = [_upload(f"{n}.png", "e" * 64) for n in range(3)] + [_upload("z.png", "d" * 64)]
    pending_images(store, redis, queue, OWNER)  # the first request after a start (or a
    taken_names(store, redis, queue, OWNER, "ds")  # flush) builds both from the store, once
    counting.reads = 0
    assert pending_images(store, redis, queue, OWNER) == 1
    named, renamed = name_uploads(batch, store, redis, queue, OWNER, "ds")
    # The running job's record and state, nothing else: the same for 2 or 200 finished.
    assert counting.reads == 2
    assert (named, renamed) == assign_names(batch, old_taken(store, OWNER, "ds"))
    assert len(renamed) == min(3, finished) and running.id


def test_two_requests_into_one_dataset_never_take_one_name(
        store: JobStore, redis: Redis, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests read the names at the same moment without the lock; with it, the second
    sees the first's names (reserved before its images are stored) and renames."""
    both = threading.Barrier(2, timeout=5)
    assign = submit.assign_names

    def slow_assign(items: Any, taken: Taken) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait(timeout=1)  # without the lock both would be here at once
        return assign(items, taken)

    monkeypatch.setattr(submit, "assign_names", slow_assign)
    results: list[tuple[list[Upload], list[Any]]] = []

    def post(sha: str) -> None:
        results.append(submit.name_and_reserve([_upload("a.png", sha)], store, redis, queue,
                                               OWNER, "ds", new_job_id()))

    threads = [threading.Thread(target=post, args=(c * 64,)) for c in "12"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(named[0].name for named, _ in results)
    assert names[0] == "a.png" and names[1].startswith("a~"), names
    assert sum(len(renamed) for _, renamed in results) == 1
    # A reservation whose job is never committed goes again with it.
    job_id = new_job_id()
    submit.name_and_reserve([_upload("b.png", "3" * 64)], store, redis, queue, OWNER, "ds",
                            job_id)
    assert "b.png" in taken_names(store, redis, queue, OWNER, "ds", ["b.png"])
    job_removed(redis, queue, OWNER, "ds", job_id)
    assert taken_names(store, redis, queue, OWNER, "ds", ["b.png"]) == {}


def test_a_quota_check_under_its_limit_reads_no_job(tmp_path: Path, redis: Redis,
                                                    queue: str) -> None:
    """The fast path: the hash's counts (which can only overstate) decide a check that
    passes; a check that would fail on them reads the jobs and heals lost removals."""
    counting = CountingStorage(LocalStorage(tmp_path / "store"))
    store = JobStore(counting)
    jobs = [_commit(store, redis, queue, {f"{n}.png": f"{n:064x}"}) for n in range(5)]
    pending_images(store, redis, queue, OWNER)  # built
    counting.reads = 0
    assert pending_images(store, redis, queue, OWNER, within=10) == 5
    assert counting.reads == 0  # under the limit: Redis alone
    for job in jobs[:3]:
        _finish(store, redis, queue, job, tell=False)  # removals lost: the hash overstates
    assert pending_images(store, redis, queue, OWNER, within=10) == 5  # still passes
    exact = pending_images(store, redis, queue, OWNER, within=4)  # over: read and healed
    assert exact == 2 == old_pending(store, OWNER)
    assert counting.reads > 0
    assert pending_images(store, redis, queue, OWNER, within=4) == 2  # healed: fast again

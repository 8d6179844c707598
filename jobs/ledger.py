"""What ``POST /annotate`` needs to know of a key's earlier jobs, kept in Redis so that a
request costs what it sends, not what the key ever stored.

* **Pending**: per owner, a hash *job id -> images* of the jobs that are not over. A job
  is added before it is committed and removed when it ends (the worker's finish or
  failure, a cancellation, a deletion). The hash may only ever hold *too many* entries
  (a removal lost in a crash): :func:`pending_images` reads the store's record and state
  of each entry, as the old full scan did of every job, and drops those that are over.
* **Names**: per (owner, dataset), a hash *file name -> "<index entry> <sha256>"*, the
  newest job holding the name winning as in the store's newest-first listing (the index
  entry ``<created>-<job id>`` sorts by age, so a write keeps the larger value). A POST
  reads its batch's names and enters its own under a per-dataset lock (:func:`naming`),
  before its images are stored, so two POSTs never take one name; a job that is then
  not committed is forgotten again. A deletion drops the whole hash, which the
  next reader rebuilds from the store (a deleted job's names must stop counting, and an
  older job may hold the same name).

Both hashes are a cache of the store, the record of what was accepted: a marker key
says a hash was built, and when Redis lost it (a flush, a restart without persistence)
the next reader rebuilds it from the store once, as :mod:`jobs.maintenance` does for
queues. A names rebuild is checked against a generation counter that every deletion
increments, so a rebuild that read a job about to be deleted never marks itself built.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from redis import Redis
from redis.exceptions import LockError, RedisError

from distill.errors import DistillError
from jobs.keys import redis_key
from jobs.records import JobRecord, is_over, utcnow
from jobs.store import DamagedRecordError, JobStore, index_entry

log = logging.getLogger(__name__)
IN_FLIGHT = 16  # store reads at once
Taken = dict[str, tuple[str, str | None]]  # name -> (identity, job id or None: this batch)
# An entry whose job is not (yet) in the store is the job being committed right now; it
# is dropped only once no commit can take that long (a crash between adding and
# committing).
UNCOMMITTED_GRACE_S = 3600
NAMING_LOCK_S = 30  # naming takes milliseconds once the names are built (outside the lock)
_CHUNK = 5000  # names per script call: a 100,000-image dataset is not one huge command

# Merges name -> value pairs into a hash, a larger value (a newer job) winning; with
# ARGV[1] a generation, only while KEYS[2] still holds it ("" = no check). Returns 0 when
# the generation moved (a deletion invalidated what the caller read).
_MERGE = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or cur < ARGV[i + 1] then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def _pending_key(queue: str, owner: str) -> str:
    return redis_key(queue, "pending", owner)


def _names_key(queue: str, owner: str, dataset: str) -> str:
    return redis_key(queue, "names", owner, dataset)


def _entry(record: JobRecord) -> str:
    """The job's index entry (:class:`jobs.store.JobStore`): sorts as the listing does."""
    return index_entry(record.created_at, record.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NamingBusyError(DistillError):
    """Another request held a dataset's naming lock for too long."""


# -- writes -------------------------------------------------------------------------------
def job_accepted(redis: Redis, queue: str, record: JobRecord) -> None:
    """Adds a job about to be committed to its owner's pending images and its dataset's
    names (before the commit: a crash after it leaves too much here, never too little)."""
    pipe = redis.pipeline(transaction=True)
    pipe.hset(_pending_key(queue, record.owner), record.id,
              f"{len(record.files)} {int(time.time())}")
    pipe.execute()
    if record.dataset is not None:
        _merge(redis, _names_key(queue, record.owner, record.dataset), "",
               _holders([record]).items())


def job_over(redis: Redis, queue: str, owner: str, job_id: str) -> None:
    """Takes a job that ended (finished, failed, cancelled) off its owner's pending."""
    redis.hdel(_pending_key(queue, owner), job_id)


def names_reserved(redis: Redis, queue: str, owner: str, dataset: str | None, job_id: str,
                   files: Iterable[tuple[str, str]]) -> None:
    """Enters a job's names (name, sha256) before its images are stored, under the naming
    lock, so that the next POST into the dataset sees them; the commit writes them again
    with the record's own entry (later, so it wins)."""
    if dataset is not None:
        entry = index_entry(utcnow(), job_id)
        _merge(redis, _names_key(queue, owner, dataset), "",
               _holders_of([(entry, name, sha) for name, sha in files]).items())


@contextlib.contextmanager
def naming(redis: Redis, queue: str, owner: str, dataset: str | None) -> Iterator[None]:
    """One POST at a time names images into a dataset (from reading the names to
    :func:`names_reserved`: milliseconds), so two never take one name. Raises
    :class:`NamingBusyError` when the lock is not had within ``NAMING_LOCK_S``."""
    if dataset is None:
        yield
        return
    lock = redis.lock(f"{_names_key(queue, owner, dataset)}:lock", timeout=NAMING_LOCK_S,
                      blocking_timeout=NAMING_LOCK_S)
    if not lock.acquire():
        raise NamingBusyError(f"dataset {dataset!r} is being named by another request for "
                              f"more than {NAMING_LOCK_S}s; retry")
    try:
        yield
    finally:
        with contextlib.suppress(LockError):  # expired: the next request has it already
            lock.release()


def job_removed(redis: Redis, queue: str, owner: str, dataset: str | None, job_id: str
                ) -> None:
    """Forgets a job deleted from the store, or never committed (call it before and after a
    deletion: a rebuild in between is then never marked built)."""
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(_pending_key(queue, owner), job_id)
    if dataset is not None:
        names = _names_key(queue, owner, dataset)
        pipe.incr(f"{names}:gen")
        pipe.delete(names, f"{names}:built")
    pipe.execute()


def remove_job(store: JobStore, redis: Redis | None, queue: str, record: JobRecord) -> None:
    """Deletes a job from the store and from what Redis keeps of it."""
    def forget() -> None:
        if redis is None:
            return
        try:
            job_removed(redis, queue, record.owner, record.dataset, record.id)
        except RedisError as exc:  # the store is the record: its deletion goes ahead
            log.warning("job %s: Redis could not forget it (%s); its dataset's names may "
                        "hold it until they are rebuilt", record.id, exc)

    forget()
    store.delete_job(record.id)
    forget()


# -- reads --------------------------------------------------------------------------------
def pending_images(store: JobStore, redis: Redis, queue: str, owner: str,
                   within: int | None = None) -> int:
    """Images in the key's jobs that are accepted and not yet finished, failed or
    cancelled: the same answer as a scan of all its jobs, reading only unfinished ones.

    With ``within``, a quota check's fast path: when the hash's own counts add up to no
    more than ``within``, that sum is returned without reading any job. It can only
    overstate (an entry whose removal was lost still counts), so a check that passes on
    it passes on the exact answer too; above ``within`` the jobs are read and healed."""
    key = _pending_key(queue, owner)
    if not redis.exists(f"{key}:built"):
        return _rebuild_pending(store, redis, key, owner)
    entries = {_text(k): _text(v).split() for k, v in redis.hgetall(key).items()}
    if within is not None:
        try:
            bound = sum(int(value[0]) for value in entries.values())
        except (ValueError, IndexError):
            bound = within + 1  # an entry not of our writing: read the jobs
        if bound <= within:
            return bound

    def images(job_id: str) -> int | None:
        """The job's images while it is pending, 0 if not yet committed, None if stale."""
        try:
            record = store.load_job(job_id)
        except DamagedRecordError:
            return None  # the full scan skipped it too: it counts for nothing
        if record is None or record.owner != owner:
            young = time.time() - float(entries[job_id][-1]) <= UNCOMMITTED_GRACE_S
            return 0 if record is None and young else None  # being committed, or deleted
        if is_over(record, store.load_state(job_id)):
            return None  # its removal was lost: heal
        return len(record.files)

    # A plan's batches may all be pending at once (1,563 for 100,000 images): a bucket's
    # latency, not its bandwidth, bounds reading them, as for a cancellation.
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="pending") as pool:
        counts = dict(zip(entries, pool.map(images, entries), strict=True))
    stale = [job_id for job_id, n in counts.items() if n is None]
    if stale:
        redis.hdel(key, *stale)
    return sum(n for n in counts.values() if n is not None)


def taken_names(store: JobStore, redis: Redis, queue: str, owner: str, dataset: str | None,
                names: Collection[str] | None = None) -> Taken:
    """The names a dataset's jobs already hold, with their identity and newest job; with
    ``names``, only those of them (all a batch's naming looks up)."""
    if dataset is None:
        return {}
    key = _names_key(queue, owner, dataset)
    if not redis.exists(f"{key}:built"):
        taken = _rebuild_names(store, redis, key, owner, dataset)
        return taken if names is None else {n: taken[n] for n in names if n in taken}
    if names is None:
        pairs = [(_text(n), _text(v)) for n, v in redis.hgetall(key).items()]
    else:
        wanted = list(dict.fromkeys(names))
        values = redis.hmget(key, wanted) if wanted else []
        pairs = [(n, _text(v)) for n, v in zip(wanted, values, strict=True) if v is not None]
    return {name: _holder(value) for name, value in pairs}


# -- rebuilding from the store ----------------------------------------------------------
def _rebuild_pending(store: JobStore, redis: Redis, key: str, owner: str) -> int:
    """The old full scan, once: fills the hash with the unfinished jobs and marks it built.
    Entries added meanwhile by new jobs stay (HSET merges)."""
    count, entries = 0, {}
    for _, record in store.list_owner_jobs(owner):
        if not is_over(record, store.load_state(record.id)):
            count += len(record.files)
            entries[record.id] = f"{len(record.files)} {int(time.time())}"
    pipe = redis.pipeline(transaction=True)
    for job_id, value in entries.items():
        pipe.hset(key, job_id, value)
    pipe.set(f"{key}:built", "1")
    pipe.execute()
    return count


def _rebuild_names(store: JobStore, redis: Redis, key: str, owner: str, dataset: str
                   ) -> Taken:
    """The old full read of the dataset's records, once; the hash is marked built only if no
    deletion happened since the read began."""
    generation = _text(redis.get(f"{key}:gen") or b"0")
    holders = _holders(r for _, r in store.list_owner_jobs(owner, dataset=dataset))
    if _merge(redis, key, generation, holders.items()):
        redis.eval(_MARK, 2, f"{key}:gen", f"{key}:built", generation)
    return {name: _holder(value) for name, value in holders.items()}


_MARK = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], '1')
return 1
"""


def _holders(records: Iterable[JobRecord]) -> dict[str, str]:
    """name -> "<entry> <sha256>" of the newest job holding each name."""
    return _holders_of((_entry(r), f.name, f.sha256) for r in records for f in r.files)


def _holders_of(files: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """(entry, name, sha256) -> name -> "<entry> <sha256>", the largest (newest) winning."""
    holders: dict[str, str] = {}
    for entry, name, sha256 in files:
        value = f"{entry} {sha256}"
        if holders.get(name, "") < value:
            holders[name] = value
    return holders


def _holder(value: str) -> tuple[str, str | None]:
    entry, _, sha256 = value.partition(" ")
    return sha256, entry.rsplit("-", 1)[-1]


def _merge(redis: Redis, key: str, generation: str, pairs: Iterable[tuple[str, str]]) -> bool:
    """Writes name -> value pairs, a chunk per script call; False once the generation moved
    (a deletion's DEL wiped the chunks written before it, later ones are refused)."""
    items = list(pairs)
    for start in range(0, len(items), _CHUNK):
        flat = [generation]
        for name, value in items[start:start + _CHUNK]:
            flat += [name, value]
        if not redis.eval(_MERGE, 2, key, f"{key}:gen", *flat):
            return False
    return True

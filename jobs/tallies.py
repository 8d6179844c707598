"""What each ended job of a dataset counts for, remembered in Redis.

A job that ended by the store's word (cancelled, or finished or failed by its worker)
never changes again, so its status, its plan and its image counts are facts (a job
that only RQ calls failed is not one: maintenance queues it again once RQ forgets it).
``GET /datasets``, ``GET /datasets/{name}`` and ``GET /plans/{id}?batches=true`` count
a dataset's jobs by status and images: without these facts each count read every
job's record and state from the store, about 3,000 reads for a 100,000-image plan on a
bucket, on every poll of a client following it. With them a count reads one Redis hash
per dataset, and the store only for the jobs still queued or running (and those ended
since the last count, which it then remembers).

A job's plan and image count are facts from its commit on, noted in a second hash
(:func:`accepted`, dropped once the job ends): a job RQ says waits and never started is
counted from them without any read of the store, so a plan that has just queued a
thousand batches costs a count nothing per batch.

The hashes live 30 days from their last write; a lost one (Redis flushed, expired) costs
one full read, which writes it again. Entries of deleted jobs are dropped by the next
count (it keeps only the jobs the dataset's index still lists).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from redis import Redis
from redis.exceptions import RedisError

from jobs.keys import redis_key
from jobs.records import JobRecord, JobStatus

log = logging.getLogger(__name__)
_TTL_S = 30 * 24 * 3600


class Ended(BaseModel):
    """An ended job as its dataset's counts see it."""

    status: JobStatus
    plan: str | None = None
    done: int = 0
    failed: int = 0
    total: int = 0


class Facts(BaseModel):
    """What never changes of any job of a dataset: its plan and its number of images."""

    plan: str | None = None
    total: int = 0


_Entry = TypeVar("_Entry", Ended, Facts)


def _key(prefix: str, owner: str, dataset: str) -> str:
    return redis_key(prefix, "dataset", owner, dataset, "ended-jobs")


def _facts_key(prefix: str, owner: str, dataset: str) -> str:
    return redis_key(prefix, "dataset", owner, dataset, "job-facts")


def accepted(redis: Redis, prefix: str, record: JobRecord) -> None:
    """Notes a job's facts as it is committed (a plan commits its batches by the
    thousand; a count then needs no read of a batch that waits in the queue)."""
    if record.dataset is None:
        return
    key = _facts_key(prefix, record.owner, record.dataset)
    facts = Facts(plan=record.plan, total=len(record.files))
    with contextlib.suppress(RedisError):
        pipe = redis.pipeline(transaction=False)
        pipe.hset(key, record.id, facts.model_dump_json())
        pipe.expire(key, _TTL_S)
        pipe.execute()


def unnote(redis: Redis, prefix: str, record: JobRecord) -> None:
    """Drops a job's noted facts where RQ's word is no longer enough to count it: it is
    cancelled (before RQ hears of it), or queued again by maintenance after Redis lost
    it (it may have run). Its next count reads it."""
    if record.dataset is not None:
        with contextlib.suppress(RedisError):
            redis.hdel(_facts_key(prefix, record.owner, record.dataset), record.id)


def facts(redis: Redis | None, prefix: str, owner: str, dataset: str) -> dict[str, Facts]:
    """The noted facts of the dataset's jobs not yet remembered as ended (an ended job's
    are dropped); none without Redis."""
    return _entries(redis, _facts_key(prefix, owner, dataset), Facts)


def recall(redis: Redis | None, prefix: str, owner: str, dataset: str) -> dict[str, Ended]:
    """The remembered ended jobs of a dataset by id; empty without Redis (everything is
    then read from the store) and without the damaged entries (read again)."""
    return _entries(redis, _key(prefix, owner, dataset), Ended)


def _entries(redis: Redis | None, key: str, model: type[_Entry]) -> dict[str, _Entry]:
    """A hash's entries by job id; a damaged one is left out (its job is read again)."""
    if redis is None:
        return {}
    try:
        raw: dict[bytes, bytes] = redis.hgetall(key)  # type: ignore[assignment]
    except RedisError:
        return {}
    found: dict[str, _Entry] = {}
    for job_id, value in raw.items():
        try:
            found[job_id.decode()] = model.model_validate_json(value)
        except (ValidationError, UnicodeDecodeError):
            log.warning("%s: a damaged entry of job %r is read again", key, job_id)
    return found


def remember(redis: Redis | None, prefix: str, owner: str, dataset: str,
             ended: dict[str, Ended], *, noted: dict[str, Facts] | None = None,
             forget: set[str] | frozenset[str] = frozenset()) -> None:
    """Adds ended jobs to the dataset's hash (their facts are no longer needed), notes
    the facts of jobs not ended (read before their commit noted them, or from before
    facts were noted), and drops ``forget`` (jobs no longer in the dataset). Never
    raises: a lost write costs a read next time."""
    noted = noted or {}
    if redis is None or not (ended or noted or forget):
        return
    key, facts_key = _key(prefix, owner, dataset), _facts_key(prefix, owner, dataset)
    with contextlib.suppress(RedisError):
        pipe = redis.pipeline(transaction=False)
        if ended:
            pipe.hset(key, mapping={i: e.model_dump_json() for i, e in ended.items()})
            pipe.expire(key, _TTL_S)
        if noted:
            pipe.hset(facts_key, mapping={i: f.model_dump_json() for i, f in noted.items()})
            pipe.expire(facts_key, _TTL_S)
        if ended or forget:
            pipe.hdel(facts_key, *ended, *forget)
        if forget:
            pipe.hdel(key, *forget)
        pipe.execute()

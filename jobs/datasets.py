"""A dataset's COCO file, written once to the store when its last batch ends.

``datasets/<owner>/<name>/annotations.json`` holds the file calibrated over all
of the dataset's finished jobs (the selection their requests ask for), and
``annotations.jobs.json`` the ids of every job it was made over. A worker writes
both when the dataset's last job ends: for a plan's batches when the plan has
made all of them and the last one ends (a Redis set counts them, so no worker
lists a large dataset per batch), for uploads when no other job of the dataset is
queued or running. The API streams the file (or redirects to it) while the
dataset's index still names exactly those jobs, and re-selects from the logs
otherwise (other thresholds, a saved selection, a job added since).
"""

from __future__ import annotations

import contextlib
import json
import logging

from redis import Redis
from redis.exceptions import LockError, RedisError

from jobs.annotations import NotAvailableError, build_coco
from jobs.keys import redis_key
from jobs.ledger import job_over
from jobs.plan_records import load_plan
from jobs.records import JobRecord, JobStatus, is_over
from jobs.storage import join
from jobs.store import JobStore, check_name

log = logging.getLogger(__name__)
COCO = "annotations.json"
JOBS = "annotations.jobs.json"
_WRITE_LOCK_S = 600


def dataset_key(owner: str, dataset: str, name: str) -> str:
    """The key of one of a dataset's files (owner and name checked)."""
    check_name(owner, dataset)
    return join("datasets", owner, dataset, name)


def current_file(store: JobStore, owner: str, dataset: str) -> str | None:
    """The key of the dataset's stored COCO file if it was made over exactly the jobs the
    dataset holds now; None otherwise (reads the index and one small object only)."""
    raw = store.storage.get(dataset_key(owner, dataset, JOBS))
    if raw is None:
        return None
    try:
        made_over = set(json.loads(raw)["jobs"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if made_over != set(store.index_ids(owner, dataset)):
        return None
    return dataset_key(owner, dataset, COCO)


def forget_if_empty(store: JobStore, owner: str, dataset: str | None) -> bool:
    """Removes a dataset's stored files (its COCO file and the list it was made over) once
    the dataset holds no job any more (retention or a DELETE removed the last one): a file
    over deleted jobs would otherwise outlive them, out of every retention. True if it did."""
    if dataset is None or store.index_ids(owner, dataset):
        return False
    check_name(owner, dataset)
    # A job added meanwhile finds no file and is served from the logs, as before any was
    # written: removing too much here costs a rebuild, never a wrong file.
    store.storage.delete_tree(join("datasets", owner, dataset))
    return True


def write_file(store: JobStore, owner: str, dataset: str) -> bool:
    """Writes the dataset's file if every job of it is over, one finished and the stored
    file is not current already (a plan sent again that found every image held makes no
    job); True if it did (the COCO file first, then the list that makes it current)."""
    if current_file(store, owner, dataset) is not None:
        return False
    records = [r for _, r in store.list_owner_jobs(owner, dataset=dataset)][::-1]
    states = {r.id: store.load_state(r.id) for r in records}
    if not records or not all(is_over(r, states[r.id]) for r in records):
        return False
    finished = [r for r in records if r.cancelled_at is None and (s := states[r.id])
                is not None and s.status == JobStatus.FINISHED]
    if not finished:
        return False
    try:
        coco = build_coco(store, finished)
    except NotAvailableError as exc:  # say, two teachers in one dataset: built per request
        log.info("dataset %s: no stored file (%s)", dataset, exc)
        return False
    store.save_json(dataset_key(owner, dataset, COCO), coco)
    store.save_json(dataset_key(owner, dataset, JOBS), {"jobs": [r.id for r in records]})
    log.info("dataset %s: COCO file written over %d jobs (%d images)", dataset,
             len(finished), len(coco["images"]))
    return True


def job_ended(store: JobStore, redis: Redis | None, prefix: str, record: JobRecord) -> None:
    """Called when a job of a dataset ends (finished or failed for good): writes the
    dataset's file if it was the last, and takes it off its key's pending images. Never
    raises: the job's own outcome is stored."""
    if redis is not None:
        with contextlib.suppress(RedisError):  # lost, the next quota check heals it
            job_over(redis, prefix, record.owner, record.id)
    if record.dataset is None:
        return
    try:
        if record.plan is not None:
            if redis is None:
                return
            ended = redis_key(prefix, "plan", record.plan, "ended")
            redis.sadd(ended, record.id)
            redis.expire(ended, 30 * 24 * 3600)
            plan_ended(store, redis, prefix, record.plan)
        else:
            _write_once(store, redis, prefix, record.owner, record.dataset)
    except Exception:
        log.exception("dataset %s: writing its file failed; downloads build it", record.dataset)


def plan_ended(store: JobStore, redis: Redis, prefix: str, plan_id: str) -> None:
    """Writes the plan's dataset file once the plan is done and all its batches ended."""
    loaded = load_plan(store, plan_id)
    if loaded is None:
        return
    plan, state = loaded
    ended = redis.scard(redis_key(prefix, "plan", plan_id, "ended"))
    if state.status == "finished" and int(ended) >= state.jobs:
        _write_once(store, redis, prefix, plan.owner, plan.dataset)


def _write_once(store: JobStore, redis: Redis | None, prefix: str, owner: str,
                dataset: str) -> None:
    """One writer at a time (a Redis lock): a job that ends while another one writes waits
    and looks again, so the last one to end always sees every job over."""
    if redis is None:
        write_file(store, owner, dataset)
        return
    lock = redis.lock(redis_key(prefix, "dataset", owner, dataset, "writing"),
                      timeout=_WRITE_LOCK_S, blocking_timeout=_WRITE_LOCK_S)
    try:
        if not lock.acquire():
            return
    except RedisError:
        return
    try:
        write_file(store, owner, dataset)
    finally:
        with contextlib.suppress(RedisError, LockError):
            lock.release()

"""Plans: a by-reference request, split into batch jobs of one dataset by a worker.

The API checks a request's references and stores its plan (``plans/<id>/plan.json``,
the API's file) and queues it; a worker lists the source a page at a time (or
walks the images list), names the images by the upload rule
(:func:`jobs.submit.assign_names`, identity = URI + ETag + size) and commits
and queues one batch job per ``batch_size`` images, recording its place in
``plans/<id>/state.json`` (the worker's file) about once a second, batches
being committed a few at a time meanwhile and the next page of the listing
fetched while one is split. Images the dataset holds already, annotated by a
finished job with the same checkpoint, are left out (:mod:`jobs.held`). So 100,000
objects never sit in the API's memory or in one request, and a plan whose
worker died resumes after its last batch: batch job ids are derived from the
plan id and the batch number, so a batch is never made twice.

A plan is cancelled by the API's ``plans/<id>/cancelled`` marker: the worker
running it looks for it each time it stores its state, stops listing and
cancels every batch it made (:mod:`jobs.cancel`); a plan that is not running
(queued, finished, died) is cancelled the same way by a run that only sweeps.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from redis import Redis

from distill.images import IMAGE_SUFFIXES
from jobs import queueing
from jobs.ahead import ahead
from jobs.cancel import cancel_jobs
from jobs.datasets import plan_ended
from jobs.held import HeldImages
from jobs.ledger import Taken, taken_names
from jobs.names import safe_path
from jobs.plan_records import (
    PlanRecord,
    PlanState,
    is_cancelled,
    load_plan,
    save_state,
)
from jobs.records import JobRecord, Renamed, StoredFile, utcnow
from jobs.references import ReferenceError, References
from jobs.store import JobStore
from jobs.submit import assign_names, commit_job

log = logging.getLogger(__name__)
SAVE_EVERY_S = 1.0
IN_FLIGHT = 16
# Batches that may exist beyond the stored state: those committed since it was stored.
UNSETTLED = 4 * IN_FLIGHT


@dataclass(frozen=True)
class _Ref:
    """One referenced image on its way into a batch."""

    name: str
    sha256: str  # the identity: URI, ETag and size
    uri: str
    size: int
    cursor: str


class _CancelledError(Exception):
    """The plan was cancelled while it ran."""


def batch_id(plan_id: str, n: int) -> str:
    """The job id of a plan's ``n``-th batch: the same on every run of the plan."""
    return hashlib.sha256(f"{plan_id}:{n}".encode()).hexdigest()[:32]


def identity(uri: str, etag: str = "", size: int = 0) -> str:
    """A referenced image's identity (the naming rule's "same content"): URI, ETag, size."""
    return hashlib.sha256(f"{uri}\n{etag}\n{size}".encode()).hexdigest()


def run_plan(store: JobStore, redis: Redis, queue_prefix: str, plan_id: str,
             refs: References) -> PlanState:
    """Lists the plan's images and commits and queues its batches, from where an earlier
    run stopped. A refused or unreadable source fails the plan (its message says why)."""
    loaded = load_plan(store, plan_id)
    if loaded is None:
        raise ReferenceError(f"no plan {plan_id}")
    plan, state = loaded
    if is_cancelled(store, plan_id):
        return _sweep(store, redis, queue_prefix, plan, state, state.batches + UNSETTLED)
    if state.status in ("finished", "failed", "cancelled"):
        return state
    state.status, state.error = "running", None
    save_state(store, plan_id, state)
    taken = taken_names(store, redis, queue_prefix, plan.owner, plan.dataset)
    batches = _Batches(store, redis, queue_prefix, plan, state)
    batch: list[_Ref] = []

    def flush() -> None:
        batches.add(batch, taken)
        batch.clear()

    listing = ahead(_references(plan, state.listed, state.cursor, refs))
    try:
        for ref in listing:
            if ref is None:
                state.skipped += 1
                continue
            if state.listed + len(batch) >= plan.max_images:
                state.error = (f"the source holds more than {plan.max_images} images "
                               "(DISTILL_MAX_REFERENCE_IMAGES); the rest was left out")
                break
            batch.append(ref)
            if len(batch) == plan.batch_size:
                flush()
        if batch:
            flush()
    except ReferenceError as exc:
        batches.close()
        state.status, state.error, state.finished_at = "failed", str(exc), utcnow()
        save_state(store, plan_id, state)
        return state
    except _CancelledError:
        batches.close()
        return _sweep(store, redis, queue_prefix, plan, state, state.batches)
    finally:
        listing.close()
    batches.close()
    state.status, state.finished_at = "finished", utcnow()
    save_state(store, plan_id, state)
    if is_cancelled(store, plan_id):  # cancelled after the last look: the API found it
        # running, so sweep here
        return _sweep(store, redis, queue_prefix, plan, state, state.batches)
    plan_ended(store, redis, queue_prefix, plan_id)  # its batches may all have ended already
    log.info("plan %s: %d images in %d batch jobs of dataset %s (%d held already, %d "
             "objects skipped)", plan_id, state.listed, state.jobs, plan.dataset, state.held,
             state.skipped)
    return state


def _sweep(store: JobStore, redis: Redis, prefix: str, plan: PlanRecord, state: PlanState,
           upto: int) -> PlanState:
    """Cancels the plan's batches that exist and are not over, and marks the plan cancelled
    (a batch that finished stays finished, as with DELETE /jobs). The batches are
    ``0 .. upto - 1`` and, in case a lost run got further than its stored state says
    (batches of names the dataset held make no job, so their numbers run ahead of the
    commits), those of the plan in the dataset's index."""
    ids = {batch_id(plan.id, n) for n in range(upto)}
    ids.update(store.index_ids(plan.owner, plan.dataset))
    cancelled = cancel_jobs(store, redis, prefix, sorted(ids), plan=plan.id)
    if state.status != "cancelled":
        state.status, state.finished_at = "cancelled", utcnow()
    state.error = None
    save_state(store, plan.id, state)
    log.info("plan %s cancelled: %d of its batch jobs cancelled", plan.id, cancelled)
    return state


class _Batches:
    """Commits and queues a plan's batches, ``IN_FLIGHT`` at a time (a bucket's latency, not
    its bandwidth, bounds a plan), and stores the plan's state about once a second, each
    time after every batch it counts is committed. So after a restart the batches after
    the stored state may exist only up to the first missing one plus ``IN_FLIGHT``: those
    are looked up (in order, under their known ids) and not made twice."""

    def __init__(self, store: JobStore, redis: Redis, prefix: str, plan: PlanRecord,
                 state: PlanState) -> None:
        self.store, self.redis, self.prefix, self.plan, self.state = (
            store, redis, prefix, plan, state)
        self.queue = queueing.queue_name(prefix, plan.teacher)
        self.pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="plan")
        self.pending: list[Future[None]] = []
        self.saved = time.monotonic()
        self.check_below: int | None = None if state.batches > 0 else 0
        self.held = HeldImages(store, plan.id, plan.teacher_sha256)

    def add(self, batch: list[_Ref], taken: Taken) -> None:
        """Names one batch (here, in order) and commits it in the pool."""
        named, renamed = assign_names(batch, taken)
        # The job holding each name with the same identity (jobs.held decides the rest).
        holders = {r.name: h[1] for r in named
                   if (h := taken.get(r.name)) and h[1] and h[0] == r.sha256}
        self.held.prefetch(set(holders.values()))
        kept = [r for r in named
                if not (r.name in holders and self.held.annotated(holders[r.name], r.name))]
        self.state.held += len(named) - len(kept)
        names = {r.name for r in kept}
        named, n = kept, self.state.batches
        renamed = [r for r in renamed if r.name in names]
        if named and not self._made_before(n):
            self.pending.append(self.pool.submit(self._commit, n, named, renamed))
        self.state.jobs += bool(named)
        self.state.batches += 1
        self.state.listed += len(batch)
        self.state.cursor = batch[-1].cursor
        if len(self.pending) >= 4 * IN_FLIGHT or time.monotonic() - self.saved >= SAVE_EVERY_S:
            self._settle()

    def close(self) -> None:
        """Waits for every commit and stores the state."""
        try:
            self._settle(check=False)
        finally:
            self.pool.shutdown()

    def _made_before(self, n: int) -> bool:
        if self.check_below is not None and n >= self.check_below:
            return False
        if self.store.load_job(batch_id(self.plan.id, n)) is not None:
            return True
        if self.check_below is None:
            self.check_below = n + IN_FLIGHT
        return False

    def _commit(self, n: int, named: list[_Ref], renamed: list[Renamed]) -> None:
        plan, job_id = self.plan, batch_id(self.plan.id, n)
        files = [StoredFile(name=r.name, stored="", bytes=r.size, width=0, height=0,
                            sha256=r.sha256, source=r.uri) for r in named]
        record = JobRecord(id=job_id, owner=plan.owner, dataset=plan.dataset,
                           created_at=utcnow(), files=files, request=plan.request,
                           timeout_s=plan.job_timeout_s, teacher=plan.teacher,
                           teacher_sha256=plan.teacher_sha256, renamed=renamed, plan=plan.id)
        commit_job(self.store, self.redis, self.prefix, self.store.staging(job_id), record)
        queueing.enqueue(self.redis, self.queue, job_id, timeout_s=plan.job_timeout_s,
                         retries=plan.retries)

    def _settle(self, *, check: bool = True) -> None:
        for future in self.pending:
            future.result()  # a failed commit fails the attempt; RQ retries the plan
        self.pending.clear()
        save_state(self.store, self.plan.id, self.state)
        self.saved = time.monotonic()
        if check and is_cancelled(self.store, self.plan.id):
            raise _CancelledError(self.plan.id)


def _references(plan: PlanRecord, listed: int, cursor: str | None, refs: References
                ) -> Iterator[_Ref | None]:
    """The plan's images after ``cursor`` (``listed`` images before it); None for a listed
    object that is no image. It runs ahead in a thread: it never reads the live state."""
    if plan.source is not None:
        for n, obj in enumerate(refs.list_source(plan.source, recursive=plan.recursive,
                                                 start_after=cursor)):
            if PurePosixPath(obj.relative).suffix.lower() not in IMAGE_SUFFIXES:
                yield None
                continue
            yield _Ref(safe_path(obj.relative, listed + n), identity(
                obj.uri, obj.etag, obj.size), obj.uri, obj.size, obj.uri.split("/", 3)[3])
        return
    start = 0 if cursor is None else int(cursor) + 1
    for n in range(start, len(plan.images)):
        uri = plan.images[n]
        path = unquote(urlsplit(uri).path) if "://" in uri else uri
        name = safe_path(path.lstrip("/") if not uri.startswith("s3://")
                         else uri.split("/", 3)[-1], n)
        yield _Ref(name, identity(uri), uri, 0, str(n))

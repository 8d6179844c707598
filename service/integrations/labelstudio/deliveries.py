"""Predictions delivered to Label Studio after ``/predict`` has answered, safe across a
restart of the API.

A job that Label Studio did not wait for (``DISTILL_LS_PREDICT_TIMEOUT_S``) keeps running,
and its predictions go to Label Studio's API (``POST /api/predictions``, with
``LABEL_STUDIO_URL`` and its key) when it ends; without a key to write with, the job is
cancelled. What a delivery needs (the job, the project's labeling config, the model
version, the task of each upload) is kept in Redis until it is done, one field per job of
``distill:<queue>:ls-deliveries``, and the API process making it holds a claim
(``distill:<queue>:ls-delivering:<job>``) that it renews while it waits and that expires
``CLAIM_S`` after its process dies (an API stopping cleanly releases its claims at once).
Each API process takes over the deliveries that no one claims when it starts and every
``SWEEP_S`` after: a restarted or crashed API's deliveries are made by the next API that
runs. What was delivered and what could not be,
by reason, is counted in ``/metrics`` (:func:`jobs.metrics.record_delivery`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from distill.errors import ConfigError
from jobs.keys import redis_key
from jobs.metrics import record_delivery
from jobs.records import JobRecord, JobStatus
from service.integrations.labelstudio.config import parse_config
from service.integrations.labelstudio.results import (
    Backend,
    abandon,
    collect_predictions,
    wait_for_job,
)
from service.integrations.labelstudio.safety import UnsafeURLError

log = logging.getLogger(__name__)
CLAIM_S = 60  # a claim outlives its process by this long at most
RENEW_S = 20
SWEEP_S = 30
_mine: dict[str, str] = {}  # job id -> this process's claim token, while it delivers
_mine_lock = threading.Lock()


@dataclass(frozen=True)
class Delivery:
    """What a late delivery needs, besides the job's record."""

    job_id: str
    teacher: str
    label_config: str  # the project's labeling config (XML), as /predict got it
    version: str  # model_version
    task_ids: dict[str, Any]  # upload name -> Label Studio task id


def deliver_later(backend: Backend, record: JobRecord, label_config: str, version: str,
                  task_ids: dict[str, Any]) -> str:
    """Hands a job that Label Studio did not wait for to a delivery (or cancels it, when
    there is no key to write to Label Studio with); returns what the tasks are told."""
    waited = f"not predicted within {backend.settings.ls_predict_timeout_s:g} s " \
             "(DISTILL_LS_PREDICT_TIMEOUT_S)"
    if not backend.studio.writable:
        _count(backend, record.teacher, 0, Counter(no_key=len(task_ids)))
        abandon(backend, record, remove=False)
        return f"{waited}; retrieve fewer tasks at a time"
    delivery = Delivery(record.id, record.teacher, label_config, version, task_ids)
    token = uuid.uuid4().hex
    queue = backend.settings.queue
    pipe = backend.redis.pipeline(transaction=True)
    pipe.hset(_pending_key(queue), record.id, json.dumps(asdict(delivery)))
    pipe.set(_claim_key(queue, record.id), token, ex=CLAIM_S)
    pipe.execute()
    _start(backend, delivery, token)
    return f"{waited}: job {record.id} delivers them to Label Studio when it finishes"


def resume(backend: Backend) -> int:
    """Takes over the deliveries that no process claims; returns how many."""
    queue, taken = backend.settings.queue, 0
    for job_id, raw in backend.redis.hgetall(_pending_key(queue)).items():
        try:
            delivery = Delivery(**json.loads(raw))
        except (TypeError, ValueError):
            log.warning("dropping a malformed Label Studio delivery %r", job_id)
            backend.redis.hdel(_pending_key(queue), job_id)
            continue
        token = uuid.uuid4().hex
        if backend.redis.set(_claim_key(queue, delivery.job_id), token, nx=True, ex=CLAIM_S):
            log.info("job %s: taking over its delivery to Label Studio", delivery.job_id)
            _start(backend, delivery, token)
            taken += 1
    return taken


def keep_resuming(backend: Callable[[], Backend | None], stop: threading.Event) -> None:
    """Calls :func:`resume` now and every ``SWEEP_S`` until ``stop`` is set (an API's
    background thread; ``backend`` is None while Label Studio has no key to write with)."""
    while True:
        found = backend()
        if found is not None:
            try:
                resume(found)
            except RedisError as exc:
                log.warning("could not look for Label Studio deliveries: %s", exc)
        if stop.wait(SWEEP_S):
            return


def release_claims(redis: Redis, queue: str) -> int:
    """Gives up this process's claims (an API shutting down), so that the next API takes
    its deliveries over at once instead of after ``CLAIM_S``; returns how many."""
    with _mine_lock:
        mine = dict(_mine)
    released = 0
    for job_id, token in mine.items():
        key = _claim_key(queue, job_id)
        try:
            if redis.get(key) == token.encode():
                released += int(redis.delete(key))
        except RedisError as exc:
            log.warning("could not release the delivery of job %s: %s", job_id, exc)
    return released


def _start(backend: Backend, delivery: Delivery, token: str) -> None:
    with _mine_lock:
        _mine[delivery.job_id] = token
    threading.Thread(target=_deliver, args=(backend, delivery, token),
                     name=f"ls-deliver-{delivery.job_id}", daemon=True).start()


def _deliver(backend: Backend, delivery: Delivery, token: str) -> None:
    """Makes the delivery and forgets it; left to the next sweep when Redis, the store or
    the config fails it on the way (its claim then expires)."""
    try:
        _make(backend, delivery, token)
    except (ConfigError, RedisError, OSError) as exc:
        log.warning("job %s: delivery to Label Studio stopped: %s", delivery.job_id, exc)
    else:
        _forget(backend.redis, backend.settings.queue, delivery.job_id)
    finally:
        with _mine_lock:
            _mine.pop(delivery.job_id, None)


def _make(backend: Backend, delivery: Delivery, token: str) -> None:
    """Waits for the job, then writes each task's prediction with ``POST /api/predictions``
    (the job stays in ``GET /jobs`` until then)."""
    record = backend.store.load_job(delivery.job_id)
    if record is None or record.cancelled_at is not None:
        log.info("job %s is gone: nothing to deliver", delivery.job_id)
        _count(backend, delivery.teacher, 0, Counter(job=len(delivery.task_ids)))
        return
    config = parse_config(delivery.label_config)
    claim, renewed = _claim_key(backend.settings.queue, record.id), [time.monotonic()]

    def renew() -> None:
        if time.monotonic() - renewed[0] >= RENEW_S:
            renewed[0] = time.monotonic()
            backend.redis.set(claim, token, ex=CLAIM_S)

    view = wait_for_job(backend, record,
                        float(record.timeout_s) * (1 + backend.settings.job_retries), renew)
    if view is None:
        log.warning("job %s: not done in time, its predictions are not delivered", record.id)
        _count(backend, delivery.teacher, 0, Counter(timeout=len(delivery.task_ids)))
        return
    _post(backend, delivery, record, view.status, {e.file_name for e in view.errors},
          collect_predictions(backend, record, view, config, delivery.version))


def _post(backend: Backend, delivery: Delivery, record: JobRecord, status: JobStatus,
          unreadable: set[str], collected: dict[str, dict[str, Any]]) -> None:
    delivered, failed = 0, Counter[str]()
    for name, task in delivery.task_ids.items():
        pred = collected.get(name) or {}
        if "result" not in pred:
            failed["image" if status == JobStatus.FINISHED and name in unreadable
                   else "job"] += 1
            continue
        try:
            backend.studio.post_json("/api/predictions", {"task": task, **pred})
            delivered += 1
        except UnsafeURLError as exc:
            failed["post"] += 1
            log.warning("job %s: task %s: %s", record.id, task, exc)
    _count(backend, delivery.teacher, delivered, failed)
    log.info("job %s: %d predictions delivered to Label Studio", record.id, delivered)


def _forget(redis: Redis, queue: str, job_id: str) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(_pending_key(queue), job_id)
    pipe.delete(_claim_key(queue, job_id))
    pipe.execute()


def _count(backend: Backend, teacher: str, delivered: int, failed: Counter[str]) -> None:
    record_delivery(backend.redis, backend.settings.queue, teacher, delivered, failed)


def _pending_key(queue: str) -> str:
    return redis_key(queue, "ls-deliveries")


def _claim_key(queue: str, job_id: str) -> str:
    return redis_key(queue, "ls-delivering", job_id)

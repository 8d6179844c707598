"""``/predict`` for Label Studio: one service job for the request's images, one
prediction per task, in order.

The API runs no model. It fetches the tasks' images (:mod:`.media`), submits them as one
job on the teacher's queue ahead of the bulk jobs waiting there, with the interactive
preset (``DISTILL_LS_TTA``, ``flip`` by default), and waits for it at most
``DISTILL_LS_PREDICT_TIMEOUT_S`` (under Label Studio's own ``ML_TIMEOUT_PREDICT``). The
job selects with the thresholds :mod:`.thresholds` chooses (a large request calibrated
over its images, a small one with the teacher's last calibrated job's thresholds, an
explicit ``model_score_threshold`` before either); its COCO file becomes the regions
through the file export's converter (:func:`distill.exports.labelstudio.image_regions`),
and the job is deleted.

A task whose image cannot be fetched or read, or that the job did not finish in time,
gets an entry without ``result`` whose ``error`` says why (:func:`error_prediction`), and
the request still succeeds. A job that has not finished when the wait is over keeps
running, visible in ``GET /jobs``, and a thread of the API writes its predictions to Label
Studio's API (``POST /api/predictions``, with ``LABEL_STUDIO_URL`` and its key) when it
finishes; without a key to write with, the job is cancelled. What was delivered and what
could not be, by reason, is counted in ``/metrics`` (:func:`jobs.metrics.record_delivery`).
(A delivery in flight is lost if the API restarts; its tasks are predicted again by the
next retrieval.)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from redis import Redis

from distill.errors import DistillError
from distill.exports._common import images_with_objects
from distill.exports.labelstudio import image_regions, prediction
from jobs import queueing
from jobs.ledger import remove_job
from jobs.metrics import record_delivery
from jobs.records import JobRecord, JobStatus, utcnow
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.submit import Upload, submit_job
from jobs.teachers import TeacherRegistry
from service.integrations.labelstudio.config import LabelingConfig
from service.integrations.labelstudio.media import LabelStudio
from service.integrations.labelstudio.safety import UnsafeURLError
from service.integrations.labelstudio.thresholds import job_request
from service.models import JobOut
from service.uploads import RejectedError, probe_image
from service.views import job_view

log = logging.getLogger(__name__)
FETCH_THREADS = 8
POLL_S = 0.1
SPOOL_BYTES = 1 << 20


@dataclass(frozen=True)
class Backend:
    """What a prediction needs from the app."""

    store: JobStore
    redis: Redis
    settings: Settings
    registry: TeacherRegistry
    studio: LabelStudio


def model_version(registry: TeacherRegistry, teacher: str) -> str:
    """``<teacher>@<first 12 hex digits of its checkpoint's SHA-256>``."""
    sha = registry.get(teacher).sha256
    return f"{teacher}@{sha[:12]}" if sha else teacher


def error_prediction(version: str, message: str) -> dict[str, Any]:
    """A task's entry when it has no prediction: why, and no ``result``, which Label
    Studio logs and skips (``ml/models.py``), so the task stays without a prediction of
    this version and the next retrieval tries it again."""
    return {"model_version": version, "error": message}


def predict(backend: Backend, owner: str, teacher: str, config: LabelingConfig,
            tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One prediction per task, in order (see the module docstring)."""
    version = model_version(backend.registry, teacher)
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        fetched = list(pool.map(lambda it: _fetch(backend, config, *it), enumerate(tasks)))
    uploads = [f for f in fetched if isinstance(f, Upload)]
    errors = {_name(i): f for i, f in enumerate(fetched) if isinstance(f, str)}
    out: dict[str, dict[str, Any]] = {}
    if uploads:
        s = backend.settings
        choice = job_request(s, backend.redis, teacher, backend.registry.get(teacher).sha256,
                             config, len(uploads))
        try:
            record = submit_job(store=backend.store, redis=backend.redis, settings=s,
                                registry=backend.registry, owner=owner, uploads=uploads,
                                request=choice.request, teacher=teacher, dataset=None,
                                interactive=True)
        finally:
            for u in uploads:
                u.data.close()
        log.info("job %s: %d task(s) for teacher %s, thresholds: %s", record.id,
                 len(uploads), teacher, choice.source)
        view = _wait(backend, record, s.ls_predict_timeout_s)
        if view is not None:
            out = _collect(backend, record, view, config, version)
        else:
            late = _late(backend, record, config, version, {
                u.name: tasks[int(u.name[4:])].get("id") for u in uploads})
            errors.update({u.name: late for u in uploads})
    return [out.get(_name(i)) or error_prediction(version, errors.get(_name(i), "no result"))
            for i in range(len(tasks))]


def _name(i: int) -> str:
    return f"task{i:05d}"


def _fetch(backend: Backend, config: LabelingConfig, i: int, task: Any) -> Upload | str:
    """The task's image as an upload, or why it cannot be had."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return "the task has no data"
    try:
        urls = backend.studio.image_urls(task["data"].get(config.data_key), task.get("id"))
        data = backend.studio.fetch(urls, backend.settings.max_file_bytes)
        probe = probe_image(io.BytesIO(data), max_pixels=backend.settings.max_pixels)
    except (UnsafeURLError, RejectedError) as exc:
        log.info("task %s: no image: %s", task.get("id"), exc)
        return f"image {config.data_key!r}: {exc}"
    # On disk beyond a megabyte: a request of a thousand tasks must not hold them in memory.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed after submit
    spool.write(data)
    spool.seek(0)
    return Upload(name=_name(i), data=cast(BinaryIO, spool), size=len(data), width=probe.width,
                  height=probe.height, sha256=hashlib.sha256(data).hexdigest())


def _wait(backend: Backend, record: JobRecord, timeout_s: float) -> JobOut | None:
    """The job's final view, or None when it has not ended within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (view := job_view(backend.store, backend.redis, record,
                                backend.settings.queue)).status.is_terminal:
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
    return view


def _collect(backend: Backend, record: JobRecord, view: JobOut, config: LabelingConfig,
             version: str) -> dict[str, dict[str, Any]]:
    """Predictions by upload name from an ended job, which is then deleted."""
    try:
        if view.status != "finished":
            raise DistillError(f"the job {view.status}: {view.error or 'no reason given'}")
        stored = backend.store.storage.get(backend.store.annotations_key(record.id))
        if stored is None:
            raise DistillError("the job's pseudo-labels are no longer stored")
        coco = json.loads(stored)
    except (DistillError, OSError, ValueError) as exc:
        return {f.name: error_prediction(version, str(exc)) for f in record.files}
    finally:
        remove_job(backend.store, backend.redis, backend.settings.queue, record)
    cats = {c["id"]: c for c in coco["categories"]}
    out = {e.file_name: error_prediction(version, f"the teacher failed on it: {e.error}")
           for e in view.errors}
    for img, anns in images_with_objects(coco):
        regions, scores = image_regions(img, anns, cats, config.plan(int(img["width"])))
        out[str(img["file_name"])] = prediction(regions, scores, version)
    return out


def _late(backend: Backend, record: JobRecord, config: LabelingConfig, version: str,
          task_ids: dict[str, Any]) -> str:
    """A job not done within Label Studio's wait: its predictions go to Label Studio's
    API when it finishes, or it is cancelled when they cannot. Says which."""
    waited = f"not predicted within {backend.settings.ls_predict_timeout_s:g} s " \
             "(DISTILL_LS_PREDICT_TIMEOUT_S)"
    if not backend.studio.writable:
        _count(backend, record, 0, Counter(no_key=len(task_ids)))
        record.cancelled_at = utcnow()  # as DELETE /jobs does
        backend.store.save_job(record)
        queueing.cancel(backend.redis, record.id)
        backend.store.delete_artifacts(record.id)
        return f"{waited}; retrieve fewer tasks at a time"
    threading.Thread(target=_deliver, args=(backend, record, config, version, task_ids),
                     name=f"ls-deliver-{record.id}", daemon=True).start()
    return f"{waited}: job {record.id} delivers them to Label Studio when it finishes"


def _deliver(backend: Backend, record: JobRecord, config: LabelingConfig, version: str,
             task_ids: dict[str, Any]) -> None:
    """Waits for the job, then writes each task's prediction with ``POST /api/predictions``
    (the job stays in ``GET /jobs`` until then); counts what was delivered and what not,
    by reason, in ``/metrics``."""
    view = _wait(backend, record, float(record.timeout_s) * (1 + backend.settings.job_retries))
    if view is None:
        log.warning("job %s: not done in time, its predictions are not delivered", record.id)
        _count(backend, record, 0, Counter(timeout=len(task_ids)))
        return
    delivered, failed = 0, Counter[str]()
    unreadable = {e.file_name for e in view.errors}
    collected = _collect(backend, record, view, config, version)
    for name, task in task_ids.items():
        pred = collected.get(name) or {}
        if "result" not in pred:
            failed["image" if view.status == JobStatus.FINISHED and name in unreadable
                   else "job"] += 1
            continue
        try:
            backend.studio.post_json("/api/predictions", {"task": task, **pred})
            delivered += 1
        except UnsafeURLError as exc:
            failed["post"] += 1
            log.warning("job %s: task %s: %s", record.id, task, exc)
    _count(backend, record, delivered, failed)
    log.info("job %s: %d predictions delivered to Label Studio", record.id, delivered)


def _count(backend: Backend, record: JobRecord, delivered: int, failed: Counter[str]) -> None:
    record_delivery(backend.redis, backend.settings.queue, record.teacher, delivered, failed)

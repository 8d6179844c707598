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
running, visible in ``GET /jobs``, and its predictions reach Label Studio through its API
when it finishes (:mod:`.deliveries`, which survives a restart of the API).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, BinaryIO, cast

from jobs.submit import Upload, submit_job
from service.integrations.labelstudio.config import LabelingConfig
from service.integrations.labelstudio.deliveries import deliver_later
from service.integrations.labelstudio.interactive import (
    DrawnBox,
    fractions,
    interactive_request,
    suggestion,
)
from service.integrations.labelstudio.results import (
    Backend,
    abandon,
    collect_predictions,
    error_prediction,
    model_version,
    wait_for_job,
)
from service.integrations.labelstudio.safety import UnsafeURLError
from service.integrations.labelstudio.thresholds import job_request
from service.uploads import RejectedError, probe_image

log = logging.getLogger(__name__)
FETCH_THREADS = 8
SPOOL_BYTES = 1 << 20


def predict(backend: Backend, owner: str, teacher: str, config: LabelingConfig,
            tasks: list[dict[str, Any]], label_config: str,
            drawn: list[DrawnBox] | None = None) -> list[dict[str, Any]]:
    """One prediction per task, in order (see the module docstring); ``config`` is the
    parsed ``label_config``, which a late delivery keeps. ``drawn``: the boxes of an
    interactive call (:mod:`.interactive`), whose one task gets them back with keypoints;
    it is not delivered later (a suggestion is wanted now or never)."""
    version = model_version(backend.registry, teacher)
    if drawn == []:  # an interactive call with nothing to answer: its regions stay
        return [error_prediction(version, "no box or click of this project's tags in the "
                                          "interactive context") for _ in tasks]
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        fetched = list(pool.map(lambda it: _fetch(backend, config, *it), enumerate(tasks)))
    uploads = [f for f in fetched if isinstance(f, Upload)]
    if drawn:  # the one task's drawn boxes: a keypoint teacher places keypoints in them
        uploads = [replace(u, boxes=fractions(drawn) or None) for u in uploads]
    errors = {_name(i): f for i, f in enumerate(fetched) if isinstance(f, str)}
    out: dict[str, dict[str, Any]] = {}
    if uploads:
        s = backend.settings
        choice = job_request(s, backend.redis, teacher, backend.registry.get(teacher).sha256,
                             config, len(uploads))
        if drawn is not None:
            choice = replace(choice, request=interactive_request(choice.request))
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
        view = wait_for_job(backend, record, s.ls_predict_timeout_s)
        if view is not None:
            out = collect_predictions(backend, record, view, config, version,
                                      None if drawn is None else
                                      lambda coco: suggestion(coco, drawn, config, version))
        elif drawn is not None:
            abandon(backend, record, remove=True)
            errors.update({u.name: "the teacher did not answer in time" for u in uploads})
        else:
            late = deliver_later(backend, record, label_config, version, {
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

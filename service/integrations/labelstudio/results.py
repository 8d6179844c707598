"""An ended job of the Label Studio backend, as one Label Studio prediction per task.

Shared by the answer to ``/predict`` (:mod:`.predict`) and by a delivery made later
through Label Studio's API (:mod:`.deliveries`): waiting for the job, turning its COCO file
into the project's regions through the file export's converter
(:func:`distill.exports.labelstudio.image_regions`), and deleting the job.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from distill.errors import DistillError
from distill.exports._common import images_with_objects
from distill.exports.labelstudio import image_regions, prediction
from jobs.cancel import cancel_job
from jobs.ledger import remove_job
from jobs.records import JobRecord
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.teachers import TeacherRegistry
from service.integrations.labelstudio.config import LabelingConfig
from service.integrations.labelstudio.media import LabelStudio
from service.models import JobOut
from service.views import job_view

POLL_S = 0.1


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


def wait_for_job(backend: Backend, record: JobRecord, timeout_s: float,
                 every: Callable[[], None] | None = None) -> JobOut | None:
    """The job's final view, or None when it has not ended within ``timeout_s``;
    ``every`` is called between polls (a delivery renews its claim there)."""
    deadline = time.monotonic() + timeout_s
    while not (view := job_view(backend.store, backend.redis, record,
                                backend.settings.queue)).status.is_terminal:
        if time.monotonic() > deadline:
            return None
        if every is not None:
            every()
        time.sleep(POLL_S)
    return view


def abandon(backend: Backend, record: JobRecord, *, remove: bool) -> None:
    """Cancels a job whose predictions nobody will take (as ``DELETE /jobs`` does), and
    with ``remove`` deletes it too."""
    with contextlib.suppress(RedisError):
        cancel_job(backend.store, backend.redis, backend.settings.queue, record)
    if remove:
        remove_job(backend.store, backend.redis, backend.settings.queue, record)


def collect_predictions(backend: Backend, record: JobRecord, view: JobOut,
                        config: LabelingConfig, version: str,
                        one: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Predictions by upload name from an ended job, which is then deleted; ``one`` turns
    the COCO file of a one-image job into its prediction instead (an interactive call)."""
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
    if one is not None and coco["images"] and not out:
        return {str(coco["images"][0]["file_name"]): one(coco)}
    for img, anns in images_with_objects(coco):
        regions, scores = image_regions(img, anns, cats, config.plan(int(img["width"])))
        out[str(img["file_name"])] = prediction(regions, scores, version)
    return out

"""Which thresholds the job of a Label Studio ``/predict`` selects with.

Calibration matches the labeled set's instances per image over the images of a job, so
it needs a set of them. A request of at least ``DISTILL_CALIBRATE_MIN_IMAGES`` tasks
(20; "Retrieve predictions" over a selection, a bulk delivery) is calibrated over its own
images, and that job's thresholds are remembered as the teacher's latest
(:mod:`jobs.calibration`). A smaller one (a task opened in the editor) is selected with
the thresholds of the teacher's last calibrated job for the same checkpoint; with none
yet, it is calibrated over its own few images as before (and, being under the minimum,
not remembered). A ``model_score_threshold`` in the labeling config replaces the score
thresholds either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from jobs.calibration import with_last
from jobs.records import JobRequest
from jobs.settings import Settings
from service.integrations.labelstudio.config import LabelingConfig


@dataclass(frozen=True)
class Choice:
    """The job's request, and a line saying where its thresholds come from."""

    request: JobRequest
    source: str


def job_request(settings: Settings, redis: Redis, teacher: str, sha256: str | None,
                config: LabelingConfig, tasks: int) -> Choice:
    """The request of a job over ``tasks`` images of a project with ``config``."""
    explicit = config.score_threshold
    base = JobRequest(tta=settings.ls_tta, fusion=settings.fusion, score_threshold=explicit)
    given = f"model_score_threshold {explicit:g}" if explicit is not None else None
    if tasks >= settings.calibrate_min_images:
        return Choice(base, given or f"calibrated over the request's {tasks} images")
    request, said = with_last(redis, settings.queue, teacher, sha256, base, tasks)
    source = "; ".join(part for part in (given, said) if part)
    return Choice(request.model_copy(update={"thresholds_from": source or None}), source)

"""The thresholds of a teacher's last calibrated job, kept for requests too small to
calibrate on their own.

Calibrated selection matches the labeled set's instances per image over the images being
annotated; over one image (a labeling tool's interactive request) that says next to
nothing. So when a job calibrated its thresholds, the worker remembers them in Redis per
teacher and checkpoint (a new checkpoint starts without any), and a small request selects
with them (:func:`with_last`): the Label Studio backend's, and ``POST /annotate`` with
``calibration=teacher`` (what CVAT's function sends for each frame).

One hash per teacher and checkpoint, ``distill:<queue>:calibrated:<teacher>:<sha256>``,
with one field per part of the selection that a job calibrated: ``score`` (category id
-> threshold, null: the category keeps nothing) and ``keypoint``; each holds the value,
the job and its image count. A job with explicit score thresholds but a calibrated
keypoint threshold updates only ``keypoint``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from jobs.keys import redis_key
from jobs.records import JobRecord, JobRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibrated:
    """One calibrated part of a job's selection."""

    job_id: str
    images: int  # the images it was calibrated over
    value: Any  # score: {category id: threshold or None}; keypoint: a threshold or None


@dataclass(frozen=True)
class LastCalibrated:
    """What the teacher's last calibrated jobs found (None: no job calibrated that part)."""

    score: Calibrated | None = None
    keypoint: Calibrated | None = None


def calibrated_key(queue: str, teacher: str, sha256: str | None) -> str:
    """The hash of ``teacher`` at checkpoint ``sha256`` (``-``: unknown checksum)."""
    return redis_key(queue, "calibrated", teacher, sha256 or "-")


def remember(redis: Redis, queue: str, record: JobRecord, teacher: str, sha256: str | None,
             coco: dict[str, Any], images: int, min_images: int) -> None:
    """Stores, as ``teacher``'s at ``sha256``, the parts of ``coco``'s selection that the
    job calibrated (its ``info.thresholds``) over ``images`` annotated images; nothing
    under ``min_images`` (``DISTILL_CALIBRATE_MIN_IMAGES``), whose calibration says
    little. Logs, never raises: a finished job stays finished."""
    request = record.request
    thresholds = (coco.get("info") or {}).get("thresholds") or {}
    if images < max(1, min_images) or not thresholds:
        return
    fields: dict[str, str] = {}
    if request.score_threshold is None and not request.score_thresholds:
        fields["score"] = json.dumps({"job_id": record.id, "images": images,
                                      "value": thresholds.get("score") or {}})
    with_keypoints = any(c.get("keypoints") for c in coco.get("categories", []))
    if with_keypoints and request.keypoint_threshold is None:
        fields["keypoint"] = json.dumps({"job_id": record.id, "images": images,
                                         "value": thresholds.get("keypoint")})
    if not fields:
        return
    try:
        pipe = redis.pipeline(transaction=True)
        for name, value in fields.items():
            pipe.hset(calibrated_key(queue, teacher, sha256), name, value)
        pipe.execute()
    except Exception:  # like the metrics: a Redis hiccup must not fail a finished job
        log.warning("could not remember the thresholds of job %s", record.id, exc_info=True)


def last_calibrated(redis: Redis, queue: str, teacher: str, sha256: str | None
                    ) -> LastCalibrated:
    """The teacher's remembered thresholds (raises RedisError when Redis is away; a
    malformed field reads as absent)."""
    raw = redis.hgetall(calibrated_key(queue, teacher, sha256))
    found: dict[str, Calibrated] = {}
    for name, value in raw.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        try:
            data = json.loads(value)
            part = Calibrated(str(data["job_id"]), int(data["images"]), data["value"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed calibration %r of teacher %s", key, teacher)
            continue
        if _well_formed(key, part.value):
            found[key] = part
    return LastCalibrated(score=found.get("score"), keypoint=found.get("keypoint"))


def with_last(redis: Redis, queue: str, teacher: str, sha256: str | None,
              request: JobRequest, images: int) -> tuple[JobRequest, str]:
    """``request`` (of a job over ``images`` images) selecting with ``teacher``'s remembered
    thresholds at ``sha256``, and a line saying which: the score thresholds unless the
    request gives one, the keypoint threshold unless it gives one. With none remembered,
    the job is calibrated over its own images, as it would have been. The line is also
    the request's ``thresholds_from``, kept in the job's record and its COCO ``info``."""
    try:
        last = last_calibrated(redis, queue, teacher, sha256)
    except RedisError as exc:  # the job's own submission will say whether Redis is away
        log.warning("teacher %s: its calibrated thresholds cannot be read: %s", teacher, exc)
        last = LastCalibrated()
    update: dict[str, Any] = {}
    said: list[str] = []
    if request.score_threshold is None and last.score is not None:
        update["score_thresholds"] = dict(last.score.value)
        said.append(f"score thresholds of job {last.score.job_id} (calibrated over "
                    f"{last.score.images} images)")
    if (request.keypoint_threshold is None and last.keypoint is not None
            and last.keypoint.value is not None):
        update["keypoint_threshold"] = float(last.keypoint.value)
        said.append(f"keypoint threshold of job {last.keypoint.job_id} (calibrated over "
                    f"{last.keypoint.images} images)")
    if request.score_threshold is None and last.score is None:
        said.append(f"no calibrated job of this checkpoint yet: calibrated over the "
                    f"request's {images} image(s)")
    source = "; ".join(said)
    return request.model_copy(update={**update, "thresholds_from": source or None}), source


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _well_formed(part: str, value: Any) -> bool:
    """A score part maps category ids to thresholds; a keypoint part is one threshold
    (null: it keeps nothing)."""
    if part == "score":
        return isinstance(value, dict) and all(_number(v) for v in value.values())
    return part == "keypoint" and _number(value)

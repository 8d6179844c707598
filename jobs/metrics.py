"""Workers' metrics: pushed into Redis when a job finishes, exported by the API at scrape time.

Why through Redis rather than a ``/metrics`` port per worker: workers run as
many processes on many machines (``docker compose up --scale``) and come and
go; a port per worker would need service discovery for Prometheus to find
them, a restarted worker would start its counters at zero, and a worker
sitting on one model pass for minutes would answer scrapes late. Counters
kept in the Redis that every worker already shares survive worker restarts,
add up over every worker without Prometheus-side sums, and are exported by
the API (:mod:`service.metrics`): one scrape target for the whole service.

Plain Redis hashes, no Prometheus client here (the job contract stays small);
keys under ``distill:<queue prefix>:metrics:``:

- ``images``: ``annotated:<teacher>`` and ``failed:<teacher>`` -> images, counted once
  per job when it finishes (a retried job's earlier attempts counted nothing);
- ``image_seconds``: a histogram of seconds per image by teacher and preset; fields are
  JSON ``[teacher, tta, part]`` with part ``count``, ``sum`` or a bucket bound (the
  cumulative count of images at or under it);
- ``last_job``: teacher -> JSON summary of its last finished job (pseudo-labels kept and
  thresholds per category name);
- ``labelstudio``: ``delivered:<teacher>`` and ``failed:<teacher>:<reason>`` -> Label
  Studio predictions written through its API after ``/predict`` stopped waiting, and
  those that could not be (:data:`DELIVERY_FAILURES`). The API's delivery threads push
  these the same way, so that API replicas add up and a restarted API loses nothing.

:func:`record_job` and :func:`record_delivery` never raise: a metrics failure must not
fail a job or a delivery.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from distill.coco import objects
from distill.options import PRESETS
from jobs.keys import redis_key

log = logging.getLogger(__name__)

# Seconds per image: a tiny CPU model with one pass is ~0.05 s, a large one under the
# paper's 18 passes on CPU is minutes.
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                              300.0)


def metrics_prefix(queue: str) -> str:
    """Key prefix of the metrics of the service whose queues are named ``<queue>.*``."""
    return redis_key(queue, "metrics", "")


DRAWN = "drawn-boxes"  # the label of jobs whose images carry drawn boxes (Label Studio)


def tta_label(tta: str) -> str:
    """The preset's name, ``custom`` for a transform list, or :data:`DRAWN`: bounded
    label values."""
    return tta if tta in PRESETS or tta == DRAWN else "custom"


def _bound(le: float) -> str:
    return f"{le:g}"


@dataclass
class Histogram:
    """Cumulative bucket counts (bound -> images at or under it), sum and count."""

    buckets: dict[float, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0


@dataclass
class LastJob:
    """The last finished job of a teacher: kept pseudo-labels and thresholds by category."""

    job_id: str | None
    finished_at: float
    kept: dict[str, int]
    score_thresholds: dict[str, float]  # +inf: the category keeps nothing
    keypoint_thresholds: dict[str, float]


# Why a Label Studio task's prediction was not delivered: Label Studio refused or could
# not be reached (post), the teacher could not read the task's image (image), the job
# failed or its result was gone (job), it did not end in time (timeout), or there was no
# key to write with, so the job was cancelled (no_key).
DELIVERY_FAILURES: tuple[str, ...] = ("post", "image", "job", "timeout", "no_key")


@dataclass
class WorkerMetrics:
    """Everything the workers (and the API's deliveries) pushed, as read at scrape time."""

    annotated: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    image_seconds: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    last_jobs: dict[str, LastJob] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)  # teacher -> predictions
    delivery_failures: dict[tuple[str, str], int] = field(default_factory=dict)


def record_job(redis: Redis, prefix: str, *, teacher: str, tta: str, images_done: int,
               images_failed: int, seconds: float, coco: dict[str, Any],
               images_timed: int | None = None, job_id: str | None = None) -> None:
    """Adds a finished job to the metrics of queue prefix ``prefix``; logs, never raises.

    ``seconds`` is the time of this attempt, over ``images_timed`` images (default: all
    of the job's); an attempt that inferred nothing (a retry that only calibrated) adds
    nothing to the histogram.
    """
    try:
        timed = images_done + images_failed if images_timed is None else images_timed
        key = metrics_prefix(prefix)
        summary = last_job_summary(coco, job_id)
        # One transaction, so that a scrape never sees a histogram half updated.
        pipe = redis.pipeline(transaction=True)
        pipe.hincrby(key + "images", f"annotated:{teacher}", images_done)
        pipe.hincrby(key + "images", f"failed:{teacher}", images_failed)
        if timed > 0:
            per_image = max(0.0, seconds) / timed
            label = tta_label(tta)
            hist = key + "image_seconds"
            for le in BUCKETS:
                if per_image <= le:
                    pipe.hincrby(hist, json.dumps([teacher, label, _bound(le)]), timed)
            pipe.hincrby(hist, json.dumps([teacher, label, "count"]), timed)
            pipe.hincrbyfloat(hist, json.dumps([teacher, label, "sum"]), max(0.0, seconds))
        pipe.hset(key + "last_job", teacher, json.dumps(summary))
        pipe.execute()
    except Exception:  # metrics must not fail a job, whatever went wrong
        log.warning("could not record the metrics of job %s", job_id, exc_info=True)


def record_delivery(redis: Redis, prefix: str, teacher: str, delivered: int,
                    failed: Counter[str]) -> None:
    """Adds predictions delivered to Label Studio and those not delivered, by reason (one
    of :data:`DELIVERY_FAILURES`); logs, never raises."""
    try:
        key = metrics_prefix(prefix) + "labelstudio"
        pipe = redis.pipeline(transaction=True)
        pipe.hincrby(key, f"delivered:{teacher}", delivered)
        for reason, n in failed.items():
            if reason in DELIVERY_FAILURES and n:
                pipe.hincrby(key, f"failed:{teacher}:{reason}", n)
        pipe.execute()
    except Exception:  # metrics must not fail a delivery, whatever went wrong
        log.warning("could not record a Label Studio delivery of teacher %s", teacher,
                    exc_info=True)


def last_job_summary(coco: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
    """Pseudo-labels kept and thresholds of a COCO output, by category name.

    Thresholds come from ``info.thresholds``: ``score`` maps category id -> threshold
    (null: the category keeps nothing), ``keypoint`` is one threshold for the
    categories that have keypoints.
    """
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories", [])}
    counts = Counter(int(a["category_id"]) for a in objects(coco))  # no ignore regions
    kept = {name: counts.get(cid, 0) for cid, name in names.items()}
    for cid, n in counts.items():  # a category the card does not list: keep it visible
        kept.setdefault(names.get(cid, str(cid)), n)
    thresholds = (coco.get("info") or {}).get("thresholds") or {}
    score = {names.get(int(cid), str(cid)): t for cid, t in (thresholds.get("score") or {}).items()}
    keypoint = thresholds.get("keypoint")
    with_keypoints = [str(c.get("name", c["id"])) for c in coco.get("categories", [])
                      if c.get("keypoints")]
    return {"job_id": job_id, "finished_at": time.time(), "kept": kept, "score": score,
            "keypoint": {name: keypoint for name in with_keypoints} if keypoint is not None
            else {}}


def read_metrics(redis: Redis, prefix: str) -> WorkerMetrics:
    """What the workers pushed for queue prefix ``prefix`` (raises RedisError when
    Redis is unreachable; malformed entries are skipped)."""
    key = metrics_prefix(prefix)
    pipe = redis.pipeline(transaction=False)
    for name in ("images", "image_seconds", "last_job", "labelstudio"):
        pipe.hgetall(key + name)
    images, seconds, last, studio = (_decoded(h) for h in pipe.execute())
    out = WorkerMetrics()
    for name, value in images.items():
        kind, _, teacher = name.partition(":")
        if kind in ("annotated", "failed"):
            getattr(out, kind)[teacher] = int(value)
    for name, value in seconds.items():
        try:
            teacher, tta, part = json.loads(name)
            if part not in ("count", "sum"):
                float(part)
        except (ValueError, TypeError):
            continue
        hist = out.image_seconds.setdefault((str(teacher), str(tta)), Histogram())
        if part == "count":
            hist.count = int(value)
        elif part == "sum":
            hist.sum = float(value)
        else:
            hist.buckets[float(part)] = int(value)
    for hist in out.image_seconds.values():
        # A bucket is written only by observations at or under it, so one never written
        # holds none; bounds of another version's buckets are dropped.
        hist.buckets = {le: hist.buckets.get(le, 0) for le in BUCKETS}
    for name, value in studio.items():
        kind, _, rest = name.partition(":")
        teacher, _, reason = rest.rpartition(":") if kind == "failed" else (rest, "", "")
        if kind == "delivered":
            out.delivered[rest] = int(value)
        elif kind == "failed" and reason in DELIVERY_FAILURES:
            out.delivery_failures[(teacher, reason)] = int(value)
    for teacher, raw in last.items():
        try:
            data = json.loads(raw)
            out.last_jobs[teacher] = LastJob(
                job_id=data.get("job_id"), finished_at=float(data["finished_at"]),
                kept={k: int(v) for k, v in data["kept"].items()},
                score_thresholds={k: math.inf if v is None else float(v)
                                  for k, v in data["score"].items()},
                keypoint_thresholds={k: float(v) for k, v in data["keypoint"].items()
                                     if v is not None})
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed last-job metric of teacher %s", teacher)
    return out


def _decoded(mapping: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode() if isinstance(v, bytes) else str(v)) for k, v in mapping.items()}

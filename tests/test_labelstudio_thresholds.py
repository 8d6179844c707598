"""A teacher's last calibrated thresholds, remembered on the real Redis and chosen for a
small Label Studio request (the end-to-end run through Label Studio is in
tests/labelstudio/test_projects.py::test_one_task_uses_the_last_calibrated_job)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from redis import Redis

from jobs.calibration import calibrated_key, last_calibrated, remember
from jobs.records import JobRecord, JobRequest
from jobs.selection import SelectionQuery, selection_for
from jobs.settings import Settings
from service.integrations.labelstudio.config import parse_config
from service.integrations.labelstudio.thresholds import job_request
from tests.conftest import RedisServer

CATS = [{"id": 1, "name": "person", "keypoints": ["nose"]}, {"id": 2, "name": "kite"}]
COCO = {"categories": CATS,
        "info": {"thresholds": {"score": {"1": 0.7, "2": None}, "keypoint": 0.4}}}
CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"{extra}><Label value="person"/>
  </RectangleLabels></View>"""


def _record(request: JobRequest, teacher: str = "t") -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, owner="o", created_at=datetime.now(UTC), files=[],
                     request=request, timeout_s=60, teacher=teacher)


@pytest.fixture
def redis(redis_server: RedisServer) -> Any:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_a_calibrated_job_is_remembered_per_teacher_and_checkpoint(redis: Redis) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    calibrated = _record(JobRequest(tta="flip", fusion="vote"))
    remember(redis, queue, calibrated, "t", "sha-a", COCO, images=30, min_images=20)
    last = last_calibrated(redis, queue, "t", "sha-a")
    assert last.score is not None and last.keypoint is not None
    assert (last.score.job_id, last.score.images) == (calibrated.id, 30)
    assert last.score.value == {"1": 0.7, "2": None} and last.keypoint.value == 0.4
    assert last_calibrated(redis, queue, "t", "sha-b").score is None  # another checkpoint
    # Explicit score thresholds: only the calibrated keypoint threshold replaces the last.
    explicit = _record(JobRequest(tta="flip", fusion="vote", score_threshold=0.2))
    remember(redis, queue, explicit, "t", "sha-a",
             {**COCO, "info": {"thresholds": {"score": {"1": 0.2}, "keypoint": 0.5}}}, 20, 20)
    last = last_calibrated(redis, queue, "t", "sha-a")
    assert last.score is not None and last.score.job_id == calibrated.id
    assert last.keypoint is not None and (last.keypoint.job_id, last.keypoint.value) == (
        explicit.id, 0.5)
    # Not remembered: a job of fewer images than the minimum (or of none).
    for images in (19, 0):
        remember(redis, queue, _record(JobRequest(tta="flip", fusion="vote")), "t", "sha-a",
                 COCO, images, min_images=20)
    assert last_calibrated(redis, queue, "t", "sha-a") == last
    redis.hset(calibrated_key(queue, "t", "sha-a"), "score", '{"job_id": "x"}')  # damaged
    assert last_calibrated(redis, queue, "t", "sha-a").score is None
    redis.delete(calibrated_key(queue, "t", "sha-a"))


def test_a_small_request_selects_with_the_remembered_thresholds(redis: Redis) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    settings = Settings(queue=queue, calibrate_min_images=20)
    config, explicit = parse_config(CONFIG.format(extra="")), parse_config(
        CONFIG.format(extra=' model_score_threshold="0.3"'))
    # Nothing remembered yet: calibrated over the request, and not remembered.
    first = job_request(settings, redis, "t", "sha", config, 1)
    assert first.request.score_thresholds == {} and first.request.score_threshold is None
    assert "no calibrated job" in first.source
    job = _record(JobRequest(tta="flip", fusion="vote"))
    remember(redis, queue, job, "t", "sha", COCO, images=40, min_images=20)
    one = job_request(settings, redis, "t", "sha", config, 1)
    assert one.request.score_thresholds == {"1": 0.7, "2": None}
    assert one.request.keypoint_threshold == 0.4 and job.id in one.source
    selection, _ = selection_for(one.request)
    assert selection.explicit and selection.category_thresholds == {1: 0.7, 2: math.inf}
    # A download's query threshold still replaces them all.
    queried, _ = selection_for(one.request, SelectionQuery(score_threshold=0.1))
    assert queried.category_thresholds == {} and queried.score_threshold == 0.1
    # The config's explicit threshold wins over the remembered ones.
    given = job_request(settings, redis, "t", "sha", explicit, 1)
    assert given.request.score_threshold == 0.3 and given.request.score_thresholds == {}
    assert given.request.keypoint_threshold == 0.4 and "model_score_threshold" in given.source
    # A large request is calibrated over its own images.
    bulk = job_request(settings, redis, "t", "sha", config, 20)
    assert bulk.request.score_thresholds == {} and bulk.request.keypoint_threshold is None
    assert "20 images" in bulk.source
    # Another checkpoint of the teacher starts without any.
    assert job_request(settings, redis, "t", "other", config, 1).request.score_thresholds == {}
    redis.delete(calibrated_key(queue, "t", "sha"))

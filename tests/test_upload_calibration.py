"""``POST /annotate`` with ``calibration=teacher``: a small upload (CVAT's frame) selects
with the thresholds of the teacher's last calibrated job, through the real API, worker
and Redis. (The remembering itself: tests/test_labelstudio_thresholds.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis

from jobs.calibration import calibrated_key, remember
from jobs.records import JobRecord, JobRequest
from tests.conftest import ServiceStack

# What a calibrated job of the person teacher found: a score threshold for its one
# category and a keypoint threshold, both unlike anything a 1-2 image job calibrates to.
REMEMBERED = {"score": {"1": 0.35}, "keypoint": 0.2}


def _post(stack: ServiceStack, image: Path, **form: str) -> Any:
    with stack.client() as c:
        return c.post("/annotate", data=form,
                      files=[("files", (image.name, image.read_bytes(), "image/png"))])


def test_a_small_upload_selects_with_the_teachers_last_calibration(
        live_service: ServiceStack, unlabeled_images: list[Path]) -> None:
    with live_service.client() as c:
        teacher = c.get("/teachers").json()["teachers"][0]
    redis = Redis.from_url(live_service.redis_url)
    key = calibrated_key(live_service.queue, teacher["name"], teacher["sha256"])
    redis.delete(key)  # another test's job of 20+ images may have left one
    try:
        # None remembered yet: the job is calibrated over its own image, and says so.
        alone = live_service.submit(unlabeled_images[:1], calibration="teacher")
        assert "no calibrated job" in alone["thresholds_from"]
        assert live_service.job(alone["id"])["request"]["score_thresholds"] == {}

        calibrated = JobRecord(id=uuid.uuid4().hex, owner="o", created_at=datetime.now(UTC),
                               files=[], request=JobRequest(tta="flip", fusion="vote"),
                               timeout_s=60, teacher=teacher["name"])
        remember(redis, live_service.queue, calibrated, teacher["name"], teacher["sha256"],
                 {"categories": teacher["categories"], "info": {"thresholds": REMEMBERED}},
                 images=40, min_images=20)
        accepted = live_service.submit(unlabeled_images[:2], calibration="teacher")
        assert calibrated.id in accepted["thresholds_from"]
        job = live_service.wait_job(accepted["id"])
        assert job["request"]["score_thresholds"] == REMEMBERED["score"]
        assert job["request"]["keypoint_threshold"] == REMEMBERED["keypoint"]
        with live_service.client() as c:
            coco = c.get(accepted["links"]["annotations"]).json()
        thresholds = coco["info"]["thresholds"]
        assert (thresholds["score"], thresholds["keypoint"]) == (REMEMBERED["score"], 0.2)
        assert coco["info"]["thresholds_from"] == accepted["thresholds_from"]
        assert all(a["score"] >= 0.35 for a in coco["annotations"] if not a["iscrowd"])

        # A threshold the upload gives wins; only the keypoint one is taken.
        given = live_service.submit(unlabeled_images[:1], calibration="teacher",
                                    score_threshold=0.5)
        assert "keypoint threshold" in given["thresholds_from"]
        assert "score thresholds" not in given["thresholds_from"]
        request = live_service.job(given["id"])["request"]
        assert request["score_threshold"] == 0.5 and request["score_thresholds"] == {}
        # The default calibrates over the job, as before.
        plain = live_service.submit(unlabeled_images[:1])
        assert plain["thresholds_from"] is None
        assert live_service.job(plain["id"])["request"]["score_thresholds"] == {}
    finally:
        redis.delete(key)
        redis.close()


def test_teacher_calibration_is_refused_with_a_dataset_or_a_bad_value(
        live_service: ServiceStack, unlabeled_images: list[Path]) -> None:
    refused = _post(live_service, unlabeled_images[0], calibration="teacher", dataset="d1")
    assert refused.status_code == 422
    assert "dataset" in refused.json()["detail"]["message"]
    bad = _post(live_service, unlabeled_images[0], calibration="last")
    assert bad.status_code == 422

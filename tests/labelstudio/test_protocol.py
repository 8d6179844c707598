"""The Label Studio backend's protocol besides a project's /predict (health, auth,
setup, webhooks, refusals) and a delivery later than Label Studio waits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from tests.conftest import API_KEYS, ServiceStack, wait_for
from tests.labelstudio.server import (
    BOX_CONFIG,
    KEYPOINT_CONFIG,
    LabelStudioServer,
    check_scores,
    connect,
    make_tasks,
    new_project,
    predictions_of,
    retrieve,
)

pytestmark = pytest.mark.slow


def test_protocol_answers(stack: ServiceStack) -> None:
    """What Label Studio relies on besides /predict: health without a key, Basic auth,
    setup from memory, every webhook event answered."""
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        assert c.get("/ls/health").json()["status"] == "UP"
        assert c.get("/ls/person/").json()["teacher"] == "person"
        assert c.post("/ls/person/setup", json={}).status_code == 401
        assert c.post("/ls/person/setup", json={}, auth=("x", "wrong")).status_code == 401
        setup = c.post("/ls/person/setup", json={"schema": KEYPOINT_CONFIG},
                       auth=("any", API_KEYS[0]))
        assert setup.json()["model_version"].startswith("person@")
        versions = c.get("/ls/person/versions", headers={
            "Authorization": f"Bearer {API_KEYS[0]}"}).json()["versions"]
        assert versions == [setup.json()["model_version"]]
        assert c.post("/ls/setup", json={}, auth=("a", API_KEYS[0])).status_code == 422
        assert c.post("/ls/nobody/setup", json={}, auth=("a", API_KEYS[0])).status_code == 404
        assert c.post("/ls/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 201
        assert c.post("/ls/webhook", json={"action": "PROJECT_UPDATED"}).status_code == 200
        assert c.post("/ls/webhook", content=b"not json").status_code == 200
        bad = c.post("/ls/shapes/predict", auth=("a", API_KEYS[0]),
                     json={"tasks": [{"id": 1, "data": {}}], "label_config": "<View/>"})
        assert bad.status_code == 422 and "RectangleLabels" in bad.text
        many = c.post("/ls/shapes/predict", auth=("a", API_KEYS[0]), json={
            "tasks": [{"id": i, "data": {}} for i in range(2001)], "label_config": BOX_CONFIG})
        assert many.status_code == 422 and "DISTILL_MAX_PENDING_IMAGES" in many.text


def test_a_request_longer_than_label_studio_waits_is_delivered_later(
        label_studio: LabelStudioServer, stack: ServiceStack, images: list[Path]) -> None:
    """An API that waits 1 ms: /predict answers at once without predictions, the job goes
    on, and its predictions reach Label Studio through its API. (At 0.3 s an idle worker
    with a warm teacher sometimes finished the 5 images in time, and the predictions
    came back in the answer: the test then failed on the missing delivery.)"""
    late = ServiceStack(root=stack.root, redis_url=stack.redis_url, teacher=None,
                        settings={**stack.settings, "ls_predict_timeout_s": "0.001"},
                        queue=stack.queue)  # the same queue, data and worker
    late.start_api()
    try:
        with label_studio.client() as c:
            project = new_project(c, "distill late", BOX_CONFIG)
        ids = make_tasks(label_studio, project, images[:5], [], "image", [])
        connect(label_studio, project, f"{late.url}/ls/shapes")
        delivered, failed = _delivery_metrics(stack.url, "shapes")
        retrieve(label_studio, project, ids)
        got = wait_for(lambda: (p := predictions_of(label_studio, ids)) and all(
            p.values()) and p, 120, "the late predictions to reach Label Studio", 1)
        for predictions in got.values():
            (prediction,) = predictions
            assert prediction["model_version"].startswith("shapes@")
            check_scores(prediction)
        with late.client() as c:  # delivered, then deleted
            wait_for(lambda: c.get("/jobs").json()["jobs"] == [], 30, "the job's deletion")
        # through Label Studio's API, not in the answer to /predict
        assert f"{len(ids)} predictions delivered to Label Studio" in (
            stack.root / "api.log").read_text()
        # and counted in /metrics (pushed to Redis, so either API shows them)
        wait_for(lambda: _delivery_metrics(stack.url, "shapes")[0] >= delivered + len(ids),
                 30, "the delivery in /metrics")
        assert _delivery_metrics(stack.url, "shapes") == (delivered + len(ids), failed)
    finally:
        late.stop_api()


def test_a_late_delivery_survives_a_restart_of_the_api(
        label_studio: LabelStudioServer, stack: ServiceStack, images: list[Path]) -> None:
    """The API that took the request stops before the job has run (no worker serves its
    queue yet); the next API takes the delivery over when it starts, and makes it once a
    worker has run the job."""
    late = ServiceStack(root=stack.root / "restart", redis_url=stack.redis_url, teacher=None,
                        settings={**stack.settings, "ls_predict_timeout_s": "0.001"})
    late.root.mkdir(exist_ok=True)
    late.start_api()
    try:
        with label_studio.client() as c:
            project = new_project(c, "distill restart", BOX_CONFIG)
        ids = make_tasks(label_studio, project, images[5:8], [], "image", [])
        connect(label_studio, project, f"{late.url}/ls/shapes")
        retrieve(label_studio, project, ids)
        pending = f"distill:{late.queue}:ls-deliveries"
        redis = Redis.from_url(late.redis_url)
        wait_for(lambda: redis.hlen(pending) == 1, 60, "the delivery to be registered")
        assert not any(predictions_of(label_studio, ids).values())  # nothing ran yet
        late.stop_api()  # a clean stop gives its claim up
        late.start_api()
        late.start_worker()
        got = wait_for(lambda: (p := predictions_of(label_studio, ids)) and all(
            p.values()) and p, 180, "the taken-over predictions to reach Label Studio", 1)
        assert all(len(predictions) == 1 for predictions in got.values())
        wait_for(lambda: redis.hlen(pending) == 0, 30, "the delivery to be forgotten")
        assert "taking over its delivery to Label Studio" in (late.root / "api.log").read_text()
        redis.close()
    finally:
        late.close()


def _delivery_metrics(url: str, teacher: str) -> tuple[float, float]:
    """Predictions delivered to Label Studio and not delivered (all reasons), from /metrics."""
    found = {"delivered": 0.0, "failed": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.labels.get("teacher") != teacher:
                continue
            if sample.name == "distill_labelstudio_predictions_delivered_total":
                found["delivered"] += sample.value
            elif sample.name == "distill_labelstudio_delivery_failures_total":
                found["failed"] += sample.value
    return found["delivered"], found["failed"]

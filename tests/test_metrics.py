"""Metrics and JSON logs: GET /metrics on a live stack after a real job, the workers'
Redis metrics on the real Redis, and the log formatters."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from distill.logs import JsonFormatter, TextFormatter, log_context
from jobs.logs import current_job_id, job_context
from jobs.metrics import BUCKETS, read_metrics, record_delivery, record_job
from service.metrics import FAMILIES, series_names
from tests.conftest import REPO, RedisServer, ServiceStack, free_port, wait_for

Sample = tuple[str, dict[str, str], float]


def _record(msg: str, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.getLogger("distill.test").makeRecord(
        "distill.test", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_json_formatter_one_line_with_exception_job_id_and_non_ascii() -> None:
    try:
        raise ValueError("Bild kaputt: größer als erlaubt")
    except ValueError:
        record = _record("übersprungen: %s", "Straße.png", exc_info=sys.exc_info())
    with job_context("a" * 32):
        assert current_job_id() == "a" * 32
        line = JsonFormatter().format(record)
    assert "\n" not in line and "übersprungen: Straße.png" in line  # not \u-escaped
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "distill.test"
    assert entry["message"] == "übersprungen: Straße.png" and entry["job_id"] == "a" * 32
    assert "Traceback" in entry["exception"] and "größer als erlaubt" in entry["exception"]
    assert entry["time"].endswith("+00:00")
    # Outside the block: no job id; an explicit extra wins over the context.
    assert "job_id" not in json.loads(JsonFormatter().format(_record("plain")))
    explicit = _record("x")
    explicit.job_id = "b" * 32
    with log_context(job_id="c" * 32):
        assert json.loads(JsonFormatter().format(explicit))["job_id"] == "b" * 32
        text = TextFormatter().format(_record("Straße"))
    assert text.endswith(f"Straße [job_id={'c' * 32}]")
    assert current_job_id() is None


def test_configure_logging_json_in_a_fresh_process() -> None:
    """Every stderr line is JSON, warnings included; a bad DISTILL_LOG_FORMAT exits 2."""
    code = ("import logging, warnings; from distill.logs import configure_logging; "
            "configure_logging('json'); warnings.warn('veraltet'); "
            "logging.getLogger('x').info('grüß %s', 'dich')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, encoding="utf-8")
    entries = [json.loads(line) for line in out.stderr.splitlines()]
    assert [e["logger"] for e in entries] == ["py.warnings", "x"]
    assert entries[1]["message"] == "grüß dich"
    bad = subprocess.run([sys.executable, "-m", "distill.cli", "worker", "--check"], cwd=REPO,
                         capture_output=True, text=True,
                         env={**os.environ, "DISTILL_LOG_FORMAT": "xml"})
    assert bad.returncode == 2 and "DISTILL_LOG_FORMAT" in bad.stderr


def test_record_job_adds_up_and_never_raises(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    prefix = f"unit{free_port()}"
    coco = {"categories": [{"id": 1, "name": "person", "keypoints": ["nose"]},
                           {"id": 2, "name": "dog"}],
            "annotations": [{"category_id": 1}, {"category_id": 1}],
            "info": {"thresholds": {"score": {"1": 0.5, "2": None}, "keypoint": 0.3}}}
    record_job(redis, prefix, teacher="t", tta="standard", images_done=3, images_failed=1,
               seconds=2.0, coco=coco)  # 0.5 s per image
    record_job(redis, prefix, teacher="t", tta="x1,flip", images_done=2, images_failed=0,
               seconds=10.0, coco=coco, images_timed=1)
    pushed = read_metrics(redis, prefix)
    assert pushed.annotated == {"t": 5} and pushed.failed == {"t": 1}
    hist = pushed.image_seconds[("t", "standard")]
    assert (hist.count, hist.sum) == (4, 2.0)
    assert [hist.buckets[le] for le in BUCKETS] == [0 if le < 0.5 else 4 for le in BUCKETS]
    assert pushed.image_seconds[("t", "custom")].count == 1  # bounded tta labels
    last = pushed.last_jobs["t"]
    assert last.kept == {"person": 2, "dog": 0}
    assert last.score_thresholds == {"person": 0.5, "dog": math.inf}
    assert last.keypoint_thresholds == {"person": 0.3}
    # Redis unreachable: logged, not raised (a finished job must stay finished).
    dead = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    record_job(dead, prefix, teacher="t", tta="standard", images_done=1, images_failed=0,
               seconds=1.0, coco=coco)
    redis.delete(*redis.keys(f"distill:{prefix}:metrics:*"))
    redis.close()


def test_label_studio_deliveries_add_up_and_never_raise(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    prefix = f"unit{free_port()}"
    record_delivery(redis, prefix, "t", 5, Counter(post=2, image=1))
    record_delivery(redis, prefix, "t", 3, Counter(timeout=4, bogus=9))  # unknown: dropped
    record_delivery(redis, prefix, "u:v", 0, Counter(no_key=2))
    pushed = read_metrics(redis, prefix)
    assert pushed.delivered == {"t": 8, "u:v": 0}
    assert pushed.delivery_failures == {("t", "post"): 2, ("t", "image"): 1,
                                        ("t", "timeout"): 4, ("u:v", "no_key"): 2}
    dead = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    record_delivery(dead, prefix, "t", 1, Counter())
    redis.delete(*redis.keys(f"distill:{prefix}:metrics:*"))
    redis.close()


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    return make_stack(api=True, workers=1, log_format="json")


def _samples(text: str) -> list[Sample]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    assert found, f"no sample {name}{labels}"
    return sum(found)


def _log(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not a JSON line: {line!r}")
    return entries


def test_metrics_and_json_logs_after_a_job(stack: ServiceStack,
                                           unlabeled_images: list[Path]) -> None:
    images = unlabeled_images[:4]
    accepted = stack.submit(images)
    job_id, teacher = accepted["id"], accepted["teacher"]
    stack.wait_job(job_id)
    with stack.client() as c:
        coco = c.get(f"/jobs/{job_id}/annotations").json()
        assert "/metrics" not in c.get("/openapi.json").json()["paths"]

    with httpx.Client(base_url=stack.url) as c:  # no API key: Prometheus has none
        resp = c.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(resp.text)
    distill = {n for n, _, _ in samples if n.startswith("distill_")}
    assert distill <= series_names()
    assert {n.removesuffix("_total") for n in distill} >= set(FAMILIES) - {"distill_image_seconds"}
    assert any(n.startswith("process_") for n, _, _ in samples)

    assert _value(samples, "distill_images_annotated_total", teacher=teacher) == len(images)
    assert _value(samples, "distill_images_failed_total", teacher=teacher) == 0
    assert _value(samples, "distill_image_seconds_count", teacher=teacher,
                  tta="identity") == len(images)
    assert _value(samples, "distill_image_seconds_bucket", teacher=teacher, tta="identity",
                  le="+Inf") == len(images)
    assert _value(samples, "distill_image_seconds_sum", teacher=teacher) > 0
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_category = Counter(names[a["category_id"]] for a in coco["annotations"])
    for category in names.values():
        assert _value(samples, "distill_last_job_pseudo_labels", teacher=teacher,
                      category=category) == per_category[category]
    for cid, threshold in coco["info"]["thresholds"]["score"].items():
        expected = math.inf if threshold is None else threshold
        assert _value(samples, "distill_last_job_threshold", teacher=teacher,
                      category=names[int(cid)], kind="score") == pytest.approx(expected)
    assert _value(samples, "distill_jobs", teacher=teacher, state="finished") == 1
    assert _value(samples, "distill_jobs", teacher=teacher, state="queued") == 0
    assert _value(samples, "distill_live_workers", teacher=teacher) == 1
    assert _value(samples, "distill_queue_depth", teacher=teacher) == 0
    assert _value(samples, "distill_redis_up") == 1
    # Nothing delivered to Label Studio yet, but the series are there for rate().
    assert _value(samples, "distill_labelstudio_predictions_delivered_total",
                  teacher=teacher) == 0
    assert _value(samples, "distill_labelstudio_delivery_failures_total", teacher=teacher,
                  reason="post") == 0

    # Logs: every line of both processes is JSON; the worker's lines about the job carry
    # its id, RQ's own included; uvicorn's access log goes through the same format.
    worker = _log(stack.root / "worker0.log")
    tagged = [e for e in worker if e.get("job_id") == job_id]
    assert {e["logger"] for e in tagged} >= {"worker.tasks", "rq.worker"}, tagged
    first, last = worker.index(tagged[0]), worker.index(tagged[-1])
    during = [e for e in worker[first:last + 1]
              if e["logger"].split(".")[0] in ("worker", "distill", "rq")
              and e["logger"] != "rq.registry"]  # the heartbeat thread's cleanup
    assert all(e.get("job_id") == job_id for e in during), during
    assert any("finished" in e["message"] for e in tagged)

    def access_logged() -> bool:
        return any(e["logger"] == "uvicorn.access" and "/metrics" in e["message"]
                   for e in _log(stack.root / "api.log"))
    wait_for(access_logged, 10, "the access log line of GET /metrics")

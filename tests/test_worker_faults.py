"""Faults: a SIGKILLed worker, a crashed API, a cancelled running job.

One stack (real Redis, API and worker subprocesses) with one image per
inference batch, so that a job is always caught mid-way.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceStack, stop_process, wait_for


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., ServiceStack]) -> Iterator[ServiceStack]:
    s = make_stack(api=True, workers=0, batch_size=1)
    yield s
    s.close()


def _ensure_worker(stack: ServiceStack) -> None:
    if not stack.live_workers():
        stack.start_worker()


def _wait_progress(stack: ServiceStack, job_id: str, done: int) -> None:
    wait_for(lambda: stack.job(job_id)["progress"]["done"] >= done, 90,
             f"job {job_id} to annotate {done} images", interval=0.1)


def test_sigkilled_worker_job_resumes_on_a_replacement(stack: ServiceStack,
                                                       unlabeled_images: list[Path]) -> None:
    victim = stack.start_worker()
    victim_name = next(iter(stack.live_workers()))
    images = unlabeled_images[:10]
    job_id = stack.submit(images)["id"]
    _wait_progress(stack, job_id, 2)
    stop_process(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    assert stack.job(job_id)["progress"]["done"] < len(images)

    stack.start_worker()
    job = stack.wait_job(job_id, timeout=120)
    recovered_in = time.monotonic() - killed_at
    assert job["progress"] == {"done": 10, "failed": 0, "total": 10}
    assert job["attempts"] == 2
    assert recovered_in < 60, f"took {recovered_in:.0f}s to finish after the kill"
    # The dead worker's announcement expires with its heartbeat (TTL 4 s here); the
    # replacement may finish the job before that, so wait up to a few TTLs.
    wait_for(lambda: victim_name not in stack.live_workers(), 15,
             "the killed worker's announcement to expire", interval=0.2)

    # Every image exactly once: in the raw log (the resumed run skipped finished ones) and
    # in the output.
    log = stack.data_dir / "jobs" / job_id / "predictions.jsonl"
    counts = Counter(json.loads(line)["file_name"] for line in log.read_text().splitlines())
    assert counts == Counter({p.name: 1 for p in images})
    with stack.client() as c:
        coco = c.get(f"/jobs/{job_id}/annotations").json()
    assert [i["file_name"] for i in coco["images"]] == [p.name for p in images]


def test_api_restart_mid_job_keeps_the_job(stack: ServiceStack,
                                           unlabeled_images: list[Path]) -> None:
    _ensure_worker(stack)
    images = unlabeled_images[2:10]
    job_id = stack.submit(images)["id"]
    _wait_progress(stack, job_id, 1)
    stack.stop_api(signal.SIGKILL)
    stack.start_api()
    assert stack.job(job_id)["status"] in ("running", "finished")
    stack.wait_job(job_id)
    with stack.client() as c:
        coco = c.get(f"/jobs/{job_id}/annotations").json()
    assert [i["file_name"] for i in coco["images"]] == [p.name for p in images]


def test_cancelling_a_running_job_stops_it(stack: ServiceStack,
                                           unlabeled_images: list[Path]) -> None:
    _ensure_worker(stack)
    job_id = stack.submit(unlabeled_images[:10])["id"]
    _wait_progress(stack, job_id, 1)
    with stack.client() as c:
        resp = c.delete(f"/jobs/{job_id}")
    assert resp.json() == {"id": job_id, "previous_status": "running", "status": "cancelled"}
    # The worker stops after the image in flight, cleans up and takes other work.
    wait_for(lambda: all(w["state"] == "idle" for w in stack.live_workers().values()), 60,
             "the worker to drop the cancelled job")
    job_dir = stack.data_dir / "jobs" / job_id
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json", "state.json"]
    # Its state says it stopped (so counts remember it as ended: jobs.tallies).
    state = json.loads((job_dir / "state.json").read_text())
    assert state["status"] == "cancelled" and state["finished_at"] is not None
    assert stack.job(job_id)["status"] == "cancelled"
    assert stack.job(job_id)["progress"]["done"] < 10
    next_job = stack.submit(unlabeled_images[:1])["id"]
    stack.wait_job(next_job)


def test_lost_job_without_retries_is_reported_failed(stack: ServiceStack,
                                                     unlabeled_images: list[Path]) -> None:
    # Jobs accepted by this API get no retry: a dead worker's job must then end "failed",
    # with the reason, rather than stay "running" for ever.
    stack.stop_api()
    stack.start_api(job_retries="0")
    for proc in stack.workers:
        stop_process(proc)
    victim = stack.start_worker()
    job_id = stack.submit(unlabeled_images[:10])["id"]
    _wait_progress(stack, job_id, 1)
    stop_process(victim, signal.SIGKILL)
    stack.start_worker()
    job = stack.wait_job(job_id, status="failed", timeout=90)
    assert "stopped responding" in job["error"]
    assert 1 <= job["progress"]["done"] < 10

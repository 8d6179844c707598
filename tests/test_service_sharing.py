"""A service a team can share, on the real stack: every finding of the outside trial,
reproduced and shown fixed.

1. same file name in two folders of one dataset: both images kept;
2. the cost of one request is bounded (passes, scale, megapixels);
3. per-key quota (429 + Retry-After) and retention;
4. a cancelled job stops between passes, not after its batch;
5. a job whose queue entry Redis lost is re-queued by the workers, no restart needed;
6. listings page with a cursor and read only the caller's jobs;
7. one error shape, declared in the OpenAPI document.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from jobs.maintenance import delete_expired_jobs
from jobs.records import JobState, JobStatus, utcnow
from jobs.store import JobStore
from tests.conftest import API_KEYS, RedisServer, ServiceStack, wait_for


def _png(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(
        buf, format="PNG")
    return buf.getvalue()


def _post(stack: ServiceStack, files: list[tuple[str, bytes]], key: str = API_KEYS[0],
          **form: Any) -> httpx.Response:
    with stack.client(key) as c:
        return c.post("/annotate", data={k: str(v) for k, v in form.items()},
                      files=[("files", (n, b, "image/png")) for n, b in files])


def _get(stack: ServiceStack, path: str, key: str = API_KEYS[0]) -> httpx.Response:
    with stack.client(key) as c:
        return c.get(path)


def test_same_name_in_two_folders_keeps_both_images(make_stack: Callable[..., ServiceStack]
                                                    ) -> None:
    stack = make_stack(api=True, workers=1)
    cam1, cam2 = _png(1), _png(2)
    first = _post(stack, [("cam1/0001.png", cam1), ("cam1/0002.png", _png(3))], dataset="cams")
    assert first.status_code == 202, first.text
    assert [f["name"] for f in first.json()["files"]] == ["cam1/0001.png", "cam1/0002.png"]
    # A tool that strips folders sends both cameras' frames as 0001.png.
    a = _post(stack, [("0001.png", cam1)], dataset="cams").json()
    b = _post(stack, [("0001.png", cam2)], dataset="cams").json()
    again = _post(stack, [("0001.png", cam1)], dataset="cams").json()  # the same image re-sent
    assert a["renamed"] == [] and again["renamed"] == []
    assert len(b["renamed"]) == 1 and b["renamed"][0]["original"] == "0001.png"
    renamed = b["renamed"][0]["name"]
    assert renamed.startswith("0001~") and renamed.endswith(".png")
    assert b["renamed"][0]["clashes_with_job"] == a["id"]
    for job in (first.json(), a, b, again):
        stack.wait_job(job["id"])
    coco = _get(stack, "/datasets/cams/annotations").json()
    names = sorted(img["file_name"] for img in coco["images"])
    assert names == sorted(["cam1/0001.png", "cam1/0002.png", "0001.png", renamed])
    assert [r["name"] for r in coco["info"]["renamed"]] == [renamed]
    refused = _post(stack, [("../escape.png", cam1)])
    assert refused.status_code == 422 and ".." in refused.text


def test_the_cost_of_one_request_is_bounded(make_stack: Callable[..., ServiceStack]) -> None:
    stack = make_stack(api=True, workers=0, max_megapixel_passes="1")
    image = [("a.png", _png(0, (400, 300)))]
    many = ",".join(str(s) for s in range(200, 640, 20)) + "+flip"  # 44 passes
    too_many = _post(stack, image, tta=many)
    assert too_many.status_code == 422
    assert "44 passes" in too_many.text and "limit of 18" in too_many.text
    huge = _post(stack, image, tta="4000")  # the tiny teacher's max size is 416
    assert huge.status_code == 422 and "limit of 832 px" in huge.text
    pixels = _post(stack, [(f"{i}.png", _png(i, (400, 300))) for i in range(3)],
                   tta="standard")  # 3 images x 6 passes of about 0.09 Mpx
    assert pixels.status_code == 422 and "megapixels" in pixels.text
    ok = _post(stack, image, tta="flip")
    assert ok.status_code == 202, ok.text
    record = json.loads((stack.data_dir / "jobs" / ok.json()["id"] / "job.json").read_text())
    assert record["timeout_s"] == 300 + 10 * 1 * 2  # base + per pass x images x passes


def test_quota_and_retention(make_stack: Callable[..., ServiceStack]) -> None:
    stack = make_stack(api=True, workers=0, max_pending_images="3")
    first = _post(stack, [("a.png", _png(0)), ("b.png", _png(1))])
    assert first.status_code == 202
    over = _post(stack, [("c.png", _png(2)), ("d.png", _png(3))])
    assert over.status_code == 429 and over.headers["Retry-After"] == "30"
    assert "limit of 3" in over.json()["detail"]["message"]
    # Another key has its own quota.
    assert _post(stack, [("c.png", _png(2))], key=API_KEYS[1]).status_code == 202

    # Retention deletes what ended long ago, never what is queued or running, however old.
    store = JobStore(stack.data_dir)
    finished = first.json()["id"]
    store.save_state(finished, JobState(status=JobStatus.FINISHED,
                                        finished_at=utcnow() - timedelta(days=30)))
    queued = _post(stack, [("e.png", _png(4))]).json()["id"]  # the quota freed up
    record = store.load_job(queued)
    assert record is not None
    record.created_at -= timedelta(days=30)
    store.save_job(record)
    assert delete_expired_jobs(store, timedelta(days=7)) == 1
    assert store.load_job(finished) is None and store.load_job(queued) is not None
    assert finished not in [j["id"] for j in _get(stack, "/jobs").json()["jobs"]]


def test_cancel_stops_between_passes(make_stack: Callable[..., ServiceStack],
                                     unlabeled_images: list[Path]) -> None:
    # One batch of 8 images under 12 large passes (tens of seconds on one thread): without
    # a check between passes the worker would finish the batch before noticing the DELETE.
    stack = make_stack(api=True, workers=1, batch_size=8)
    job = stack.submit(unlabeled_images[:8], tta="x2,x2.2,x2.4,x2.6,x2.8,x3+flip")
    wait_for(lambda: stack.job(job["id"])["status"] == "running", 60, "the job to start",
             interval=0.05)
    time.sleep(0.5)
    with stack.client() as c:
        assert c.delete(f"/jobs/{job['id']}").json()["status"] == "cancelled"
    cancelled_at = time.monotonic()

    def idle() -> bool:
        return all(w["state"] == "idle" for w in stack.live_workers().values())
    wait_for(idle, 30, "the worker to drop the cancelled job", interval=0.1)
    stopped_in = time.monotonic() - cancelled_at
    assert stopped_in < 5, f"the worker stayed busy {stopped_in:.1f}s after the DELETE"
    assert not (stack.data_dir / "jobs" / job["id"] / "predictions.jsonl").exists()


def test_a_job_redis_lost_is_requeued_without_a_restart(
        make_stack: Callable[..., ServiceStack], redis_server: RedisServer,
        unlabeled_images: list[Path]) -> None:
    from redis import Redis

    stack = make_stack(api=True, workers=0, maintenance_interval_s="1", requeue_after_s="0")
    job = stack.submit(unlabeled_images[:2])
    redis = Redis.from_url(redis_server.url)
    # Redis loses the job (a restart without persistence): its queue entry and record.
    queue = f"{stack.queue}.teacher"
    redis.delete(f"rq:queue:{queue}", f"rq:job:{job['id']}")
    assert stack.job(job["id"])["status"] == "queued"
    stack.start_worker()  # no API restart: the worker's maintenance heals the queue
    stack.wait_job(job["id"], timeout=60)


def test_listings_page_with_a_cursor(make_stack: Callable[..., ServiceStack]) -> None:
    stack = make_stack(api=True, workers=0)
    ids = [_post(stack, [(f"{i}.png", _png(i))]).json()["id"] for i in range(5)]
    _post(stack, [("other.png", _png(9))], key=API_KEYS[1])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = _get(stack, "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3  # newest first, nobody else's, no repeats
    assert _get(stack, "/jobs?cursor=../../etc").status_code == 422


def test_one_error_shape_declared_in_the_openapi_document(
        make_stack: Callable[..., ServiceStack]) -> None:
    stack = make_stack(api=True, workers=0)
    bodies = [
        _get(stack, "/jobs", key="wrong-key"),                         # 401
        _get(stack, "/jobs/" + "0" * 32),                              # 404
        _get(stack, "/jobs?limit=0"),                                  # 422 (FastAPI's own)
        _post(stack, [("a.txt", b"not an image")]),                    # 422 (ours, with files)
    ]
    with stack.client() as c:
        bodies.append(c.post("/annotate", data={"tta": "flip"}))     # 422: files missing
        bodies.append(c.put("/jobs/" + "0" * 32 + "/selection", content=b"\xff{",
                            headers={"Content-Type": "application/json"}))  # 400: not JSON
    assert bodies[-1].status_code == 400, bodies[-1].text
    for resp in bodies:
        assert resp.status_code in (400, 401, 404, 422), resp.text
        detail = resp.json()["detail"]
        assert isinstance(detail, dict) and isinstance(detail["message"], str), resp.text
    spec = _get(stack, "/openapi.json").json()
    assert "ErrorBody" in spec["components"]["schemas"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if path in ("/healthz", "/readyz"):
                continue
            assert "401" in op["responses"], f"{method} {path} does not declare 401"
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                assert "400" in op["responses"], f"{method} {path} does not declare 400"
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    upload = spec["paths"]["/annotate"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    form = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[-1]]
    assert "files" in form["required"]

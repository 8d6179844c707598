"""Bad input gets a clear 4xx, never a 500: uploads, keys, ownership, query values.

Runs against an API without workers (jobs stay queued), with small limits.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from rq import Queue

from distill.errors import ConfigError
from jobs.settings import Settings
from service.app import create_app
from tests.conftest import API_KEYS, REPO, RedisServer, ServiceStack

LIMITS = {"max_files": 3, "max_file_bytes": 300_000, "max_request_bytes": 1_000_000,
          "max_pixels": 200_000}


@pytest.fixture(scope="module")
def api(make_stack: Callable[..., ServiceStack]) -> Iterator[ServiceStack]:
    stack = make_stack(api=True, workers=0, **LIMITS)
    yield stack
    stack.close()


def _png(width: int, height: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    arr = (rng.integers(0, 256, (height, width, 3)) if noise
           else np.full((height, width, 3), 90)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in its header: a classic decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _post(api: ServiceStack, files: list[tuple[str, bytes]], key: str | None = API_KEYS[0],
          **form: Any) -> httpx.Response:
    with api.client(key) as c:
        return c.post("/annotate", data={k: str(v) for k, v in form.items()},
                      files=[("files", (n, b, "image/png")) for n, b in files])


def _message(resp: httpx.Response) -> str:
    detail = resp.json()["detail"]
    assert isinstance(detail["message"], str)  # the one error shape
    return str(detail)


def test_upload_limits_and_content(api: ServiceStack, unlabeled_images: list[Path]) -> None:
    ok = unlabeled_images[0].read_bytes()
    with api.client() as c:
        resp = c.post("/annotate", data={"tta": "identity"})
    assert resp.status_code == 422 and "body.files: Field required" in _message(resp)

    resp = _post(api, [(f"{i}.png", ok) for i in range(4)])
    assert resp.status_code == 422
    assert "4 files" in _message(resp) and "limit of 3" in _message(resp)

    noisy = _png(380, 380, noise=True)
    assert len(noisy) > LIMITS["max_file_bytes"]
    assert LIMITS["max_pixels"] > 380 * 380
    resp = _post(api, [("ok.png", ok), ("big.png", noisy)])
    assert resp.status_code == 413
    assert resp.json()["detail"]["files"] == [
        {"file": "big.png", "error": f"{len(noisy)} bytes, more than the limit of 300000"}]

    resp = _post(api, [("a.png", noisy), ("b.png", noisy), ("c.png", noisy)])
    assert resp.status_code == 413 and "more than the limit of 1000000" in _message(resp)

    resp = _post(api, [("ok.png", ok), ("fake.png", b"GIF? no, just text " * 20)])
    assert resp.status_code == 422
    assert resp.json()["detail"]["files"][0]["file"] == "fake.png"
    assert "not an image" in resp.json()["detail"]["files"][0]["error"]

    bombs = (("wide.png", _png(1000, 1000)), ("bomb.png", _header_only_png(30000, 30000)))
    for name, bomb in bombs:
        resp = _post(api, [(name, bomb)])
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"]["files"][0]["file"] == name
        assert "pixels" in resp.json()["detail"]["files"][0]["error"]

    for form in ({"tta": "bogus"}, {"fusion": "avg"}, {"score_thresh": "abc"},
                 {"score_thresh": "1.5"}, {"keypoint_thresh": "nan"}, {"dataset": "../up"}):
        resp = _post(api, [("ok.png", ok)], **form)
        assert resp.status_code == 422, (form, resp.text)
    assert list((api.data_dir / "jobs").iterdir()) == []  # nothing refused was stored


def test_file_names_are_metadata_only(api: ServiceStack, unlabeled_images: list[Path]) -> None:
    ok = unlabeled_images[0].read_bytes()
    for climbing in ("../../escape.png", "..\\..\\win.png", "cam1/../../x.png"):
        resp = _post(api, [(climbing, ok)])
        assert resp.status_code == 422 and "climbs out of its folder" in _message(resp)
    resp = _post(api, [(n, ok) for n in ("/etc/passwd", "cam1/0001.png", "c:<x>|.png")])
    assert resp.status_code == 202, resp.text
    # Relative paths are kept, a leading slash dropped, odd characters go.
    assert [f["name"] for f in resp.json()["files"]] == ["etc/passwd", "cam1/0001.png",
                                                         "cx.png"]
    # The same image twice under one name is one image; an empty name gets a generated one.
    resp2 = _post(api, [(n, ok) for n in ("a.png", "a.png", "...")])
    assert resp2.status_code == 202, resp2.text
    got = [f["name"] for f in resp2.json()["files"]]
    assert got[0] == "a.png" and got[1].startswith("image_") and len(got) == 2
    stored = sorted(p.relative_to(api.root) for p in api.root.rglob("*") if p.is_file()
                    and "images" in p.parts)
    assert all(p.name.endswith(".img") and p.parts[1] == "jobs" for p in stored)
    job_images = [p for p in stored if resp.json()["id"] in p.parts]
    assert len(job_images) == 1  # one content, stored once, under its hash
    assert not list(api.root.parent.rglob("escape.png"))
    assert not list(api.root.parent.rglob("passwd"))


def test_keys_and_ownership(api: ServiceStack, unlabeled_images: list[Path]) -> None:
    job = _post(api, [("x.png", unlabeled_images[0].read_bytes())]).json()["id"]
    with api.client(key=None) as anon:
        for path in ("/jobs", f"/jobs/{job}", "/teachers"):
            resp = anon.get(path)
            assert resp.status_code == 401 and "missing API key" in _message(resp)
        resp = anon.get("/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert resp.status_code == 401 and "malformed" in _message(resp)
    assert _post(api, [("x.png", b"x")], key="wrong").status_code == 401
    with api.client("wrong") as c:
        assert c.get("/jobs").status_code == 401
    with api.client(API_KEYS[1]) as other:
        for method, path in (("GET", f"/jobs/{job}"), ("GET", f"/jobs/{job}/annotations"),
                             ("DELETE", f"/jobs/{job}")):
            assert other.request(method, path).status_code == 404
        assert job not in [j["id"] for j in other.get("/jobs").json()["jobs"]]
    assert api.job(job)["status"] == "queued"  # the other key's DELETE did nothing
    record = (api.data_dir / "jobs" / job / "job.json").read_text()
    assert API_KEYS[0] not in record  # only a hash of the key is stored


def test_malformed_queries_unknown_jobs_and_conflicts(api: ServiceStack,
                                                      unlabeled_images: list[Path]) -> None:
    job = _post(api, [("x.png", unlabeled_images[0].read_bytes())]).json()["id"]
    with api.client() as c:
        for path, params in (("/jobs", {"limit": "abc"}), ("/jobs", {"limit": "0"}),
                             ("/jobs", {"status": "bogus"}),
                             (f"/jobs/{job}/annotations", {"score_thresh": "abc"}),
                             (f"/jobs/{job}/annotations", {"score_thresh": "-1"}),
                             (f"/jobs/{job}/annotations", {"keypoint_thresh": "inf"}),
                             ("/datasets/ok/annotations", {"partial": "maybe"})):
            resp = c.get(path, params=params)
            assert resp.status_code == 422, (path, params, resp.text)
        for path in ("/jobs/" + "0" * 32, "/jobs/not-a-job", "/jobs/..%2F..%2Fetc",
                     "/jobs/" + "0" * 32 + "/annotations", "/datasets/nothing/annotations"):
            assert c.get(path).status_code == 404, path
        assert c.get("/datasets/bad name!/annotations").status_code in (404, 422)
        resp = c.get(f"/jobs/{job}/annotations")
        assert resp.status_code == 409 and resp.json()["detail"]["status"] == "queued"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["workers"] == 0


def test_cancel_queued_job_then_delete(api: ServiceStack, redis_server: RedisServer,
                                       unlabeled_images: list[Path]) -> None:
    from redis import Redis

    job = _post(api, [("x.png", unlabeled_images[0].read_bytes())]).json()["id"]
    queue = Queue(f"{api.queue}.teacher", connection=Redis.from_url(redis_server.url))
    assert job in queue.job_ids
    with api.client() as c:
        resp = c.delete(f"/jobs/{job}")
        assert resp.json() == {"id": job, "previous_status": "queued", "status": "cancelled"}
        assert job not in queue.job_ids
        assert not (api.data_dir / "jobs" / job / "images").exists()
        assert c.get(f"/jobs/{job}").json()["status"] == "cancelled"
        assert c.get(f"/jobs/{job}/annotations").status_code == 409
        assert c.delete(f"/jobs/{job}").json()["status"] == "deleted"
        assert c.get(f"/jobs/{job}").status_code == 404


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_service_refuses_to_start_without_keys(redis_server: RedisServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DISTILL_API_KEYS"):
        create_app(Settings(redis_url=redis_server.url, data_dir=tmp_path, api_keys=[]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env.update(REDIS_URL=redis_server.url, DISTILL_DATA_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "serve", "--port", "1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "DISTILL_API_KEYS" in proc.stderr
    # Explicitly open: every caller is the same anonymous owner.
    from fastapi.testclient import TestClient  # deprecated-httpx warning at import

    app = create_app(Settings(redis_url=redis_server.url, data_dir=tmp_path, allow_open=True,
                              queue="open-test"))
    with TestClient(app) as client:
        assert client.get("/jobs").json() == {"jobs": [], "next_cursor": None}


def test_listing_a_datasets_jobs_by_status_after_a_count(api: ServiceStack,
                                                         unlabeled_images: list[Path]) -> None:
    """GET /jobs?dataset=&status= once GET /datasets/{name} has counted (and remembered
    the ended jobs): the same answers as before any count, each status its own jobs."""
    ids = [api.submit(unlabeled_images[n:n + 1], dataset="by-status", tta="identity")["id"]
           for n in range(4)]
    with api.client() as c:
        for job_id in ids[:2]:
            assert c.delete(f"/jobs/{job_id}").status_code == 200

        def listed(status: str) -> set[str]:
            page = c.get("/jobs", params={"dataset": "by-status", "status": status})
            assert page.status_code == 200, page.text
            return {j["id"] for j in page.json()["jobs"]}
        before = {s: listed(s) for s in ("queued", "cancelled", "finished")}
        summary = c.get("/datasets/by-status").json()
        assert summary["statuses"] == {"cancelled": 2, "queued": 2}
        after = {s: listed(s) for s in ("queued", "cancelled", "finished")}
        for job_id in ids[2:]:  # leave the queue as the other tests expect it
            assert c.delete(f"/jobs/{job_id}").status_code == 200
    assert before == after == {"queued": set(ids[2:]), "cancelled": set(ids[:2]),
                               "finished": set()}

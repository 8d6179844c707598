"""Load test: concurrent clients against the API with several workers and a real Redis,
with Redis restarted once mid-run (append-only persistence on).

Prints POST latency percentiles, images per second, and the check that matters:
every accepted image is in exactly one finished job's COCO file (lost 0,
duplicated 0). Bounded in time and requests; everything runs on loopback::

    python benchmarks/load_test.py --clients 4 --workers 2 --seconds 60

A random-weight ``tiny`` keypoint teacher (identity preset) keeps the model cheap, so
the figures are the service's, not a real model's.
"""

from __future__ import annotations

import argparse
import io
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import KEY, Stack, _teacher, _wait

from distill.processes import free_port


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 128, 3)).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class Client(threading.Thread):
    """Uploads batches of fresh images until the deadline, at most 2 jobs outstanding;
    a refused POST (Redis down: 503, or a connection error) is retried."""

    def __init__(self, n: int, url: str, batch: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.n, self.url, self.batch, self.deadline = n, url, batch, deadline
        self.latencies: list[float] = []
        self.accepted: dict[str, list[str]] = {}  # job id -> image names
        self.retries = 0
        self.rng = np.random.default_rng(n)

    def run(self) -> None:
        http = httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {KEY}"})
        outstanding: list[str] = []
        sent = 0
        while time.monotonic() < self.deadline:
            names = [f"client{self.n}/{sent + i:05d}.png" for i in range(self.batch)]
            files = [("files", (name, _png(self.rng), "image/png")) for name in names]
            t0 = time.perf_counter()
            try:
                resp = http.post("/annotate", files=files, data={"dataset": f"load{self.n}"})
            except httpx.HTTPError:
                resp = None
            if resp is None or resp.status_code in (503, 429):
                self.retries += 1
                time.sleep(0.3)
                continue
            resp.raise_for_status()
            self.latencies.append(time.perf_counter() - t0)
            job = resp.json()["id"]
            self.accepted[job] = names
            outstanding.append(job)
            sent += self.batch
            while len(outstanding) >= 2 and time.monotonic() < self.deadline:
                if self._ended(http, outstanding[0]):
                    outstanding.pop(0)
                else:
                    time.sleep(0.2)
        http.close()

    @staticmethod
    def _ended(http: httpx.Client, job: str) -> bool:
        try:
            return http.get(f"/jobs/{job}").json()["status"] in ("finished", "failed",
                                                                 "cancelled")
        except (httpx.HTTPError, KeyError, ValueError):
            return False


def _start_redis(stack: Stack, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = stack._spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                         "--dir", str(workdir)], "redis-aof")
    import redis

    _wait(lambda: redis.Redis(port=port).ping(), 30, "redis-server")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="images per POST")
    ap.add_argument("--seconds", type=float, default=60, help="how long clients upload")
    args = ap.parse_args()

    from distill.data import generate

    root = Path(tempfile.mkdtemp(prefix="load-test-"))
    splits = generate(root / "synth", labeled=8, unlabeled=0, test=0, seed=0)
    teacher = _teacher(root, splits["labeled"].keypoints_json)
    redis_port, redis_dir = free_port(), root / "redis"
    redis_dir.mkdir()
    stack = Stack(root, teacher, {"tta": "identity", "batch_size": "4", "torch_threads": "1",
                                  "maintenance_interval_s": "2", "requeue_after_s": "5",
                                  "heartbeat_interval_s": "1", "heartbeat_ttl_s": "5"})
    stack.procs.remove(stack.redis)  # replaced by an append-only server of our own
    stack.redis.send_signal(signal.SIGTERM)
    stack.env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    redis_proc = _start_redis(stack, redis_port, redis_dir)
    report: dict[str, Any] = {}
    try:
        stack.start_api()
        for _ in range(args.workers):
            stack.start_worker()
        t0 = time.monotonic()
        clients = [Client(i, f"http://127.0.0.1:{stack.port}", args.batch, t0 + args.seconds)
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        # Mid-run, Redis restarts: what it had on disk (append-only) comes back.
        time.sleep(args.seconds / 2)
        redis_proc.send_signal(signal.SIGTERM)
        redis_proc.wait(timeout=30)
        stack.procs.remove(redis_proc)
        time.sleep(1.0)
        redis_proc = _start_redis(stack, redis_port, redis_dir)
        for c in clients:
            c.join()
        jobs = {j: names for c in clients for j, names in c.accepted.items()}
        _wait(lambda: all(Client._ended(stack.http, j) for j in jobs), 600,
              "every accepted job to end")
        elapsed = time.monotonic() - t0
        seen: Counter[str] = Counter()
        failed = 0
        for job in jobs:
            if stack.http.get(f"/jobs/{job}").json()["status"] != "finished":
                failed += 1
                continue
            coco = stack.http.get(f"/jobs/{job}/annotations").json()
            seen.update(img["file_name"] for img in coco["images"])
        accepted = Counter(n for names in jobs.values() for n in names)
        latencies = sorted(x for c in clients for x in c.latencies)
        report = {
            "posts": len(latencies), "images": sum(accepted.values()), "jobs": len(jobs),
            "failed_jobs": failed, "retried_posts": sum(c.retries for c in clients),
            "lost": sum(1 for n in accepted if seen[n] == 0),
            "duplicated": sum(1 for n in accepted if seen[n] > 1),
            "p50_ms": 1000 * statistics.median(latencies),
            "p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "images_per_s": sum(accepted.values()) / elapsed, "elapsed_s": elapsed}
    finally:
        stack.close()
    print(f"\nload test: {args.clients} clients x {args.batch}-image batches for "
          f"{args.seconds:.0f} s, {args.workers} workers, Redis restarted once mid-run")
    print(f"  POST /annotate: {report['posts']} accepted, median {report['p50_ms']:.0f} ms, "
          f"p90 {report['p90_ms']:.0f} ms, p99 {report['p99_ms']:.0f} ms; "
          f"{report['retried_posts']} refused while Redis was down, then retried")
    print(f"  {report['images']} images in {report['jobs']} jobs, all ended after "
          f"{report['elapsed_s']:.0f} s: {report['images_per_s']:.1f} images/s; "
          f"failed jobs {report['failed_jobs']}")
    print(f"  lost {report['lost']}, duplicated {report['duplicated']}")
    return 0 if report["lost"] == report["duplicated"] == report["failed_jobs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

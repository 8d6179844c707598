"""Storage benchmark (issue 23): a bucket store at scale, against the local directory.

Prints
1. accepting a dataset of N images referenced in place (one small PNG under N keys of
   an s3:// prefix): seconds from ``POST /annotate`` to the plan having committed and
   queued every batch job, and the API's peak resident memory meanwhile (acceptance:
   N = 100,000 in under a minute, API under 300 MB);
2. the API's peak resident memory while it serves ``GET /datasets/{name}/annotations``
   for that dataset and for a small one (acceptance: flat in the dataset's size). The
   batches' predictions are written as a worker would (no inference: one box per image),
   and the dataset's file by the workers' own code (``jobs.datasets.write_file``);
3. a worker's throughput through the bucket against the local-directory store on the
   same uploaded images (seconds per image from start to end of the job, median of
   ``--rounds`` alternating runs; acceptance: within 10 %).

Everything runs locally: moto's S3 server, a private redis-server, ``distill serve`` and
``distill worker`` subprocesses, a random-weight ``tiny`` teacher. Example::

    python benchmarks/storage_bench.py --refs 100000 --images 24 --rounds 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.service_bench import (
    KEY,
    Stack,
    _teacher,
    _wait,
    sample_rss,
)
from distill.processes import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _moto(root: Path) -> tuple[subprocess.Popen[bytes], str, Any]:
    port = free_port()
    log = open(root / "moto.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **CREDENTIALS})
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench",
        region_name="us-east-1").client("s3", endpoint_url=endpoint,
                                        config=boto3.session.Config(max_pool_connections=32))
    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port)):
            return True
    _wait(answers, 60, "moto's server")
    return proc, endpoint, client


def _peak(pid: int, work: Any) -> tuple[Any, float]:
    """Runs ``work()`` while sampling ``pid``'s RSS; returns its result and the peak MB."""
    stop, samples = threading.Event(), []  # type: ignore[var-annotated]
    sampler = threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True)
    sampler.start()
    try:
        out = work()
    finally:
        stop.set()
        sampler.join()
    return out, max(mb for _, mb in samples)


def accept(stack: Stack, api_pid: int, client: Any, team: str, png: bytes, n: int
           ) -> dict[str, Any]:
    """Part 1: N referenced images accepted and split into batch jobs."""
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=team, Key=f"refs/{k:06d}.png",
                                                  Body=png), range(n)))

    def run() -> dict[str, Any]:
        t0 = time.perf_counter()
        resp = stack.http.post("/annotate", json={"source": f"s3://{team}/refs/",
                                                  "dataset": "big"})
        resp.raise_for_status()
        plan = resp.json()["id"]
        post_s = time.perf_counter() - t0
        state = _wait(lambda: (s := stack.http.get(f"/plans/{plan}").json()["state"])
                      ["status"] in ("finished", "failed") and s, 900, "the plan")
        return {"post_s": post_s, "accepted_s": time.perf_counter() - t0, **state}

    out, peak = _peak(api_pid, run)
    return {**out, "api_peak_mb": peak}


def fake_results(store: Any, owner: str, dataset: str, card: dict[str, Any]) -> int:
    """Writes what workers would for every batch of a dataset (one box per image), and the
    dataset's file with the workers' code; returns the images."""
    from distill.predictions import ImageRecord, encode_records
    from jobs.datasets import write_file
    from jobs.records import JobState, JobStatus

    records = [r for _, r in store.list_owner_jobs(owner, dataset=dataset)]

    def one(record: Any) -> int:
        recs = [ImageRecord(f.name, 64, 64, boxes=((4.0, 4.0, 40.0, 40.0),), scores=(0.9,),
                            category_ids=(1,), keypoints=(((10.0, 10.0),) * 17,),
                            keypoint_scores=((0.5,) * 17,)) for f in record.files]
        store.storage.put(store.job_key(record.id, "predictions.jsonl"),
                          encode_records(recs).encode())
        store.save_json(store.job_key(record.id, "card.json"), card)
        state = JobState(status=JobStatus.FINISHED, done=len(recs), total=len(recs))
        state.finish(len(recs))
        store.save_state(record.id, state)
        return len(recs)

    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(one, records))
    write_file(store, owner, dataset)
    return total


def download(stack: Stack, api_pid: int, dataset: str) -> dict[str, Any]:
    """Part 2: the API's peak RSS while it streams the dataset's file."""
    def run() -> int:
        size = 0
        with stack.http.stream("GET", f"/datasets/{dataset}/annotations") as resp:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(1 << 20):
                size += len(chunk)
                time.sleep(0.01)  # a slow client: the API must not buffer the file
        return size

    before = __import__("psutil").Process(api_pid).memory_info().rss / 2**20
    size, peak = _peak(api_pid, run)
    return {"bytes": size, "api_before_mb": before, "api_peak_mb": peak}


def throughput(stacks: dict[str, Stack], images: list[Path], rounds: int) -> dict[str, Any]:
    """Part 3: seconds per image of one job through each store, alternating."""
    files = [(p.name, p.read_bytes()) for p in images]
    times: dict[str, list[float]] = {name: [] for name in stacks}
    for _ in range(rounds):
        for name, stack in stacks.items():
            job = stack.finish(stack.post(files)["id"], poll=1.0)  # polls cost the CPU too
            assert job["status"] == "finished", job
            took = (datetime.fromisoformat(job["finished_at"])
                    - datetime.fromisoformat(job["started_at"])).total_seconds()
            times[name].append(took / len(files))
    return {name: statistics.median(t) for name, t in times.items()} | {"runs": times}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--refs", type=int, default=100_000, help="referenced images (part 1)")
    p.add_argument("--images", type=int, default=24, help="uploaded images (part 3)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tta", default="identity")
    p.add_argument("--accept-only", action="store_true", help="part 1 only")
    args = p.parse_args()

    from distill.checkpoint import load_checkpoint
    from distill.data import generate
    from jobs.s3 import S3Storage
    from jobs.store import JobStore
    from service.auth import owner_of

    os.environ.update(CREDENTIALS)  # this process writes the batches' results too
    root = Path(tempfile.mkdtemp(prefix="storage-bench-"))
    splits = generate(root / "synth", labeled=8, unlabeled=args.images, test=0, seed=0)
    images = sorted(splits["unlabeled"].images_dir.glob("*.png"))
    teacher = _teacher(root, splits["labeled"].keypoints_json)
    moto, endpoint, client = _moto(root)
    store_bucket, team = "bench-store", "bench-team"
    client.create_bucket(Bucket=store_bucket)
    client.create_bucket(Bucket=team)
    common = {"tta": args.tta, "batch_size": "1", "torch_threads": "1",
              "max_pending_images": str(10 * args.refs)}
    s3 = {**common, "storage": f"s3://{store_bucket}/svc", "s3_endpoint_url": endpoint,
          "reference_allow": f"s3://{team}/"}
    for name in ("local", "s3"):
        (root / name / "data").mkdir(parents=True)
    stacks = {"local": Stack(root / "local", teacher, common),
              "s3": Stack(root / "s3", teacher, s3)}
    try:
        for stack in stacks.values():
            stack.env.update({**CREDENTIALS, "OMP_NUM_THREADS": "1", "DISTILL_API_KEYS": KEY})
            stack.start_api()
        big = stacks["s3"]
        api_pid = big.procs[-1].pid
        worker = big.start_worker()
        tiny = io.BytesIO()  # one small image under every key (moto holds them in memory)
        Image.new("RGB", (32, 32), (120, 30, 200)).save(tiny, format="PNG")
        report: dict[str, Any] = {"refs": accept(big, api_pid, client, team,
                                                 tiny.getvalue(), args.refs)}
        print(f"1. {args.refs} referenced images: POST answered in "
              f"{report['refs']['post_s']:.2f} s, all {report['refs']['jobs']} batch jobs "
              f"made in {report['refs']['accepted_s']:.1f} s; API peak RSS "
              f"{report['refs']['api_peak_mb']:.0f} MB", flush=True)
        if args.accept_only:
            return 0
        small = big.http.post("/annotate", json={"images": [f"s3://{team}/refs/000000.png"],
                                                 "dataset": "small"})
        small.raise_for_status()
        _wait(lambda: big.http.get(f"/plans/{small.json()['id']}").json()["state"]["status"]
              == "finished", 600, "the small plan")
        worker.terminate()  # no inference on 100,000 images: their results are written below
        worker.wait(300)
        store = JobStore(S3Storage(f"s3://{store_bucket}/svc", endpoint_url=endpoint))
        owner = owner_of(KEY)
        card = {"card": load_checkpoint(teacher)[0].to_dict(),
                "info": {"tta": args.tta, "transforms": ["x1"]}}
        report["download"] = {}
        for name in ("small", "big"):
            _wait(lambda n=name: list(store.list_owner_jobs(owner, dataset=n)), 120, name)
            n_images = fake_results(store, owner, name, card)
            report["download"][name] = {"images": n_images, **download(big, api_pid, name)}
            d = report["download"][name]
            print(f"2. download of {n_images} images ({d['bytes'] / 2**20:.1f} MB): API RSS "
                  f"{d['api_before_mb']:.0f} MB before, peak {d['api_peak_mb']:.0f} MB",
                  flush=True)
        from redis import Redis
        from rq import Queue

        # The big dataset's batches stay unannotated: off the queue, before part 3.
        with Redis.from_url(big.env["REDIS_URL"]) as redis:
            Queue(f"distill.{teacher.stem}", connection=redis).empty()
        for stack in stacks.values():
            stack.start_worker()
        report["throughput"] = throughput(stacks, images, args.rounds)
        t = report["throughput"]
        print(f"3. seconds per image, median of {args.rounds}: local {t['local']:.3f}, "
              f"bucket {t['s3']:.3f} ({100 * (t['s3'] / t['local'] - 1):+.1f} %)")
        (root / "report.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"report: {root / 'report.json'}")
    finally:
        for stack in stacks.values():
            stack.close()
        moto.terminate()
        moto.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

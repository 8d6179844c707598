"""Time to count a large dataset's jobs (``GET /datasets/{name}``, ``GET /plans/{id}?
batches=true``): every job's record and state read from the store (how it was done
before), against ``service.views.tally`` (ended jobs remembered in Redis, the others
read side by side), cold (nothing remembered yet) and warm (the next poll).

    python benchmarks/dataset_tally.py --jobs 1500 --running 50 --queued 100
    python benchmarks/dataset_tally.py --jobs 1500 --s3   # on moto's S3 server

Writes the job records (and the states of the ended and running ones) into a temporary
local store, or a bucket of a moto server it starts, and counts them against the Redis
at ``--redis`` (its keys under a throwaway prefix are removed after). Checks that every
way gives the same count.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis import Redis
from rq import Queue
from rq.job import Job

from jobs import queueing, tallies
from jobs.keys import redis_key
from jobs.records import JobRecord, JobRequest, JobState, JobStatus, StoredFile, utcnow
from jobs.storage import LocalStorage, Storage
from jobs.store import JobStore
from service.views import job_view, tally

PREFIX = "bench-tally"
QUEUE = f"{PREFIX}-queue"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
          "AWS_DEFAULT_REGION": "us-east-1"}


def make_jobs(store: JobStore, redis: Redis, jobs: int, running: int, queued: int,
              images: int) -> None:
    """``jobs`` jobs of one dataset, committed as the service commits them (their facts
    noted in Redis): the last ``queued`` waiting in an RQ queue no worker serves, the
    ``running`` before them running, the rest finished."""
    for n in range(jobs):
        created = utcnow() + timedelta(milliseconds=n)
        record = JobRecord(
            id=f"{n:032x}", owner="o", dataset="ds", created_at=created, plan="p",
            files=[StoredFile(name=f"{n}-{k}.jpg", stored="", bytes=0, width=0, height=0,
                              sha256="0" * 64) for k in range(images)],
            request=JobRequest(tta="standard", fusion="vote"), timeout_s=3600)
        store.commit(store.staging(record.id), record)
        tallies.accepted(redis, PREFIX, record)
        if n < jobs - queued - running:
            state = JobState(total=images, done=images)
            state.finish(annotations=0)  # as the worker ends it
        elif n < jobs - queued:
            state = JobState(status=JobStatus.RUNNING, total=images, done=images // 2)
        else:
            queueing.enqueue(redis, QUEUE, record.id, timeout_s=3600, retries=0)
            continue
        store.save_state(record.id, state)


def read_everything(store: JobStore, redis: Redis) -> tuple[int, dict[str, int], int]:
    """The count as it was made before: every record and state, one after the other."""
    views = [job_view(store, redis, r, PREFIX)
             for _, r in store.list_owner_jobs("o", dataset="ds")]
    return (len(views), dict(Counter(str(v.status) for v in views)),
            sum(v.progress.done for v in views))


def timed(label: str, fn, repeat: int = 3) -> tuple:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:<44} {best * 1000:9.1f} ms")
    return out  # type: ignore[return-value]


def moto_storage(tmp: Path) -> tuple[Storage, subprocess.Popen[bytes]]:
    """A bucket of a moto server started here (as the tests start it)."""
    import boto3

    from jobs.s3 import S3Storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=open(tmp / "moto.log", "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV})
    client = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench",
        region_name="us-east-1").client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            break
        except Exception:  # not up yet
            time.sleep(0.2)
    return S3Storage("s3://bench/store", client=client, retry_s=1), proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1500)
    ap.add_argument("--running", type=int, default=50)
    ap.add_argument("--queued", type=int, default=100)
    ap.add_argument("--images", type=int, default=64, help="images per job")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--s3", action="store_true", help="the store on moto's S3 server")
    args = ap.parse_args()
    redis = Redis.from_url(args.redis)
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        if args.s3:
            storage, proc = moto_storage(Path(tmp))
        else:
            storage = LocalStorage(Path(tmp) / "store")
        try:
            store = JobStore(storage)
            start = time.perf_counter()
            make_jobs(store, redis, args.jobs, args.running, args.queued, args.images)
            print(f"{args.jobs} jobs written in {time.perf_counter() - start:.1f} s "
                  f"({'moto S3' if args.s3 else 'local directory'})")
            before = timed("every record and state, one by one", lambda: read_everything(
                store, redis), repeat=1)
            cold = timed("tally, cold (nothing remembered)", lambda: _tally(store, redis, True),
                         repeat=1)
            warm = timed("tally, warm (ended jobs remembered)", lambda: _tally(store, redis))
            assert before == cold == warm, (before, cold, warm)
            print(f"same count every way: {before[0]} jobs, {before[1]}, {before[2]} images done")
        finally:
            for key in redis.scan_iter(f"distill:{PREFIX}:*"):
                redis.delete(key)
            for n in range(args.jobs):
                redis.delete(Job.key_for(f"{n:032x}"))
            Queue(QUEUE, connection=redis).delete(delete_jobs=True)
            if proc is not None:
                proc.terminate()
                proc.wait()


def _tally(store: JobStore, redis: Redis, forget: bool = False) -> tuple[int, dict[str, int], int]:
    if forget:  # what a count has remembered (the facts noted at commit stay)
        redis.delete(redis_key(PREFIX, "dataset", "o", "ds", "ended-jobs"))
    counted = tally(store, redis, PREFIX, "o", "ds")
    assert counted is not None
    return counted.jobs, counted.statuses, counted.images.done


if __name__ == "__main__":
    main()

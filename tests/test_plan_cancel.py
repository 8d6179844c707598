"""Cancelling a by-reference request while its plan is still splitting the source.

A real stack: moto's S3 server (the team's bucket and the service's store),
Redis, the API and a worker as separate processes. The plan makes one batch job
per image, so that 600 images keep it busy for seconds; ``DELETE /plans/{id}``
arrives while it runs. The plan must stop before it has made every batch, every
batch it did make must end up cancelled (none left queued, none run), and
another key can neither see nor cancel the plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis import Redis

from jobs import queueing
from jobs.plans import batch_id
from jobs.s3 import S3Storage
from jobs.store import JobStore
from tests.conftest import API_KEYS, S3_CREDENTIALS, S3Server, ServiceStack, wait_for

IMAGES = 600


def test_a_plan_cancelled_while_it_runs_stops_and_cancels_its_batches(
        make_stack: Callable[..., ServiceStack], s3_server: S3Server) -> None:
    store_bucket, team = s3_server.bucket(), s3_server.bucket()
    client = s3_server.client()
    with ThreadPoolExecutor(16) as pool:  # the bytes are never read: the batches never run
        list(pool.map(lambda n: client.put_object(Bucket=team, Key=f"many/{n:04d}.png",
                                                  Body=b"png"), range(IMAGES)))
    stack = make_stack(api=False, workers=0, environ=S3_CREDENTIALS,
                       storage=f"s3://{store_bucket}/svc", s3_endpoint_url=s3_server.endpoint,
                       reference_allow=f"s3://{team}/", reference_batch_size=1)
    stack.start_api()
    stack.start_worker(data_dir=str(stack.root / "worker-data"))
    with stack.client() as c:
        resp = c.post("/annotate", json={"source": f"s3://{team}/many/", "dataset": "many"})
        assert resp.status_code == 202, resp.text
        plan_id = resp.json()["id"]

        def running() -> Any:
            state = c.get(f"/plans/{plan_id}").json()["state"]
            return state["status"] == "running" and state["jobs"] > 0 and state
        wait_for(running, 60, "the plan to make its first batches", interval=0.05)

        with stack.client(API_KEYS[1]) as other:  # another key's plan is not found
            assert other.delete(f"/plans/{plan_id}").status_code == 404
        gone = c.delete(f"/plans/{plan_id}")
        assert gone.status_code == 202, gone.text
        assert gone.json()["id"] == plan_id
        done = wait_for(lambda: (s := c.get(f"/plans/{plan_id}").json()["state"])["status"]
                        == "cancelled" and s, 60, "the plan to be cancelled", interval=0.2)
        assert c.delete("/plans/" + "0" * 32).status_code == 404

    # It stopped early, and every batch it made is cancelled and off the queue.
    assert 0 < done["jobs"] < IMAGES and done["listed"] < IMAGES, done
    store = JobStore(S3Storage(f"s3://{store_bucket}/svc", client=client))
    made = [r for r in (store.load_job(batch_id(plan_id, n)) for n in range(IMAGES))
            if r is not None]
    assert len(made) == done["jobs"]
    assert all(r.cancelled_at is not None for r in made)
    with stack.client() as c:
        listed = c.get("/jobs", params={"dataset": "many", "limit": 100}).json()["jobs"]
        assert listed and {j["status"] for j in listed} == {"cancelled"}
        with Redis.from_url(stack.redis_url) as redis:
            rq = queueing.rq_statuses(redis, [r.id for r in made])
        assert set(rq.values()) == {"canceled"}, rq  # taken off the queue: never run
        time.sleep(1.0)  # the worker is free now: it would have taken a queued batch
        assert all(store.load_state(r.id) is None for r in made)
        assert c.get(f"/plans/{plan_id}").json()["state"]["status"] == "cancelled"

"""The storage layer on both backends, and a whole stack on a bucket.

The backends' contract runs against a local directory and a real S3 endpoint
(moto's server in its own process); the stack tests run the API and a worker
as separate processes with separate local data directories that share only
Redis and the bucket, through a TCP proxy that the outage test cuts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from distill.predictions import ImageRecord
from jobs.predlog import StoredLog, open_log, sync_log
from jobs.records import JobRecord, JobRequest, utcnow
from jobs.s3 import S3Storage
from jobs.storage import LocalStorage, Storage, StorageError, StorageUnavailableError
from jobs.store import JobStore
from tests.conftest import S3_CREDENTIALS, S3Server, ServiceStack, stop_process, wait_for


class TcpProxy:
    """Forwards a loopback port to another; :meth:`cut` refuses and drops connections
    until :meth:`mend` (a bucket that stops answering, without losing its objects)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.up.clear()
        for conn in list(self.open):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def mend(self) -> None:
        self.up.set()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()
                if s in self.open:
                    self.open.remove(s)


# ---- the backends' contract -------------------------------------------------------------

@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Storage(f"s3://{server.bucket()}/some/prefix", client=server.client(), retry_s=1)


def test_objects_put_get_list_delete(storage: Storage, tmp_path: Path) -> None:
    storage.put("jobs/a/job.json", b"{}")
    storage.put("jobs/a/images/x.img", b"x" * 3_000_000)
    with open(tmp_path / "src", "wb") as fh:
        fh.write(b"streamed")
    with open(tmp_path / "src", "rb") as fh:
        storage.put("jobs/b/job.json", fh)
    assert storage.get("jobs/a/job.json") == b"{}"
    assert storage.get("jobs/b/job.json") == b"streamed"
    assert storage.get("jobs/c/job.json") is None
    assert storage.children("jobs") == ["a", "b"]
    assert storage.children("jobs/a") == ["images", "job.json"]
    assert storage.children("nothing") == []
    assert b"".join(storage.chunks("jobs/a/images/x.img", 1 << 20) or []) == b"x" * 3_000_000
    assert storage.chunks("jobs/a/missing") is None
    assert storage.download("jobs/a/job.json", tmp_path / "copy") and \
        (tmp_path / "copy").read_bytes() == b"{}"
    storage.delete_tree("jobs/a")
    storage.delete("jobs/b/job.json")
    storage.delete("jobs/b/job.json")  # deleting nothing is fine
    assert storage.children("jobs") in (["b"], [])  # a directory may stay, empty
    assert storage.children("jobs/b") == [] and not storage.exists("jobs/a/job.json")
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", "a\\b"):
        with pytest.raises(StorageError):
            storage.put(bad, b"")


def test_presigned_urls_only_from_a_bucket(storage: Storage) -> None:
    storage.put("d/coco.json", b'{"images": []}')
    url = storage.presign("d/coco.json", 60, "d.json")
    if isinstance(storage, LocalStorage):
        assert url is None and storage.local_path("d/coco.json") is not None
    else:
        assert url is not None and storage.local_path("d/coco.json") is None
        got = httpx.get(url)
        assert got.status_code == 200 and got.content == b'{"images": []}'


def _record(n: int, owner: str = "owner1", dataset: str | None = "ds") -> JobRecord:
    return JobRecord(id=f"{n:032x}", owner=owner, dataset=dataset,
                     created_at=utcnow() + timedelta(seconds=n), files=[],
                     request=JobRequest(tta="identity", fusion="vote"), timeout_s=60)


def test_jobs_commit_list_newest_first_with_a_cursor_and_delete(storage: Storage) -> None:
    store = JobStore(storage)
    staging = store.staging(_record(1).id)
    store.put_staged(staging, "images/a.img", b"png")
    assert store.load_job(_record(1).id) is None and list(store.list_jobs()) == []
    for n in (1, 2, 3):
        if n != 1:
            staging = store.staging(_record(n).id)
        store.commit(staging, _record(n, dataset="ds" if n != 2 else None))
    assert store.storage.get(store.image_key(_record(1).id, "a.img")) == b"png"
    listed = list(store.list_owner_jobs("owner1"))
    assert [r.id for _, r in listed] == [_record(n).id for n in (3, 2, 1)]
    after = [r.id for _, r in store.list_owner_jobs("owner1", after=listed[0][0])]
    assert after == [_record(n).id for n in (2, 1)]
    assert [r.id for _, r in store.list_owner_jobs("owner1", dataset="ds")] == \
        [_record(3).id, _record(1).id]
    assert list(store.list_owner_jobs("owner2")) == []
    store.delete_job(_record(3).id)
    assert [r.id for r in store.list_jobs()] == [_record(1).id, _record(2).id]
    assert [r.id for _, r in store.list_owner_jobs("owner1", dataset="ds")] == [_record(1).id]


def test_a_stored_log_resumes_from_its_parts(storage: Storage, tmp_path: Path) -> None:
    store = JobStore(storage)
    job = _record(7).id
    first = open_log(store, job, tmp_path / "w1")
    first.append([ImageRecord("a.png", 4, 4), ImageRecord.failed("b.png", "bad")])
    first.append([ImageRecord("c.png", 4, 4)])
    sync_log(first)  # what a worker does before it reports progress
    # Another worker (another cache folder) takes the job over and skips what is done.
    second = open_log(store, job, tmp_path / "w2")
    assert second.done() == {"a.png", "b.png", "c.png"}
    second.append([ImageRecord("d.png", 4, 4), ImageRecord("a.png", 8, 8)])
    sync_log(second)
    assert sorted(store.read_predictions(job)) == ["a.png", "b.png", "c.png", "d.png"]
    assert store.read_predictions(job)["a.png"].width == 8  # the later record wins
    if isinstance(second, StoredLog):
        parts = storage.children(store.job_key(job, "predictions"))
        assert parts == ["000000.jsonl", "000001.jsonl"]
        second.seal()
        assert storage.children(store.job_key(job, "predictions")) == []
    lines = (storage.get(store.job_key(job, "predictions.jsonl")) or b"").splitlines()
    assert Counter(json.loads(line)["file_name"] for line in lines) == \
        Counter({"a.png": 2, "b.png": 1, "c.png": 1, "d.png": 1})


def test_an_unreachable_bucket_is_retried_then_reported(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    proxy = TcpProxy(("127.0.0.1", int(s3_server.endpoint.rsplit(":", 1)[1])))
    import boto3

    client = boto3.session.Session(**{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
        "region_name": "us-east-1"}).client("s3", endpoint_url=proxy.endpoint)
    store = S3Storage(f"s3://{bucket}", client=client, retry_s=1.5)
    store.put("k", b"v")
    proxy.cut()
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="unreachable"):
        store.get("k")
    assert 0.5 < time.monotonic() - started < 10  # retried for about retry_s, then given up
    # Back within the retry window: the call succeeds as if nothing happened.
    patient = S3Storage(f"s3://{bucket}", client=client, retry_s=20)
    threading.Timer(1.0, proxy.mend).start()
    assert patient.get("k") == b"v"


# ---- a stack on a bucket ---------------------------------------------------------------

# Ten passes, two of them at twice the size: slow enough that a job of 8 images is still
# running a second after its second image (progress is stored each second). Six passes
# up to x1.5 were not, once CPU inference went channels-last on an idle machine.
SLOW = "x1,x1.25,x1.5,x1.75,x2+flip"

@pytest.fixture(scope="module")
def bucket_stack(make_stack: Callable[..., ServiceStack], s3_server: S3Server
                 ) -> Iterator[tuple[ServiceStack, TcpProxy, str]]:
    bucket = s3_server.bucket()
    proxy = TcpProxy(("127.0.0.1", int(s3_server.endpoint.rsplit(":", 1)[1])))
    stack = make_stack(api=False, workers=0, batch_size=1, environ=S3_CREDENTIALS,
                       storage=f"s3://{bucket}/svc", s3_endpoint_url=proxy.endpoint,
                       storage_retry_s=30)
    stack.start_api()
    yield stack, proxy, bucket
    stack.close()


def _worker(stack: ServiceStack) -> Any:
    """A worker on its own machine: a local data directory not shared with the API's (a
    replacement after a kill runs on the same machine and clears the dead one's cache)."""
    return stack.start_worker(data_dir=str(stack.root / "worker-data"))


def _image_bytes_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".img", ".png")]


def test_a_job_on_a_bucket_shares_no_disk_and_survives_a_killed_worker(
        bucket_stack: tuple[ServiceStack, TcpProxy, str], s3_server: S3Server,
        unlabeled_images: list[Path]) -> None:
    stack, _, bucket = bucket_stack
    victim = _worker(stack)
    images = unlabeled_images[:8]
    # Six passes per image: slow enough to be caught mid-way (progress is stored each second).
    job_id = stack.submit(images, tta=SLOW)["id"]
    wait_for(lambda: stack.job(job_id)["progress"]["done"] >= 2, 90, "two images done",
             interval=0.1)
    stop_process(victim, signal.SIGKILL)
    assert stack.job(job_id)["progress"]["done"] < len(images)
    _worker(stack)
    job = stack.wait_job(job_id, timeout=120)
    assert job["progress"] == {"done": 8, "failed": 0, "total": 8} and job["attempts"] == 2

    # Every image exactly once in the sealed log, in the bucket.
    client = s3_server.client()
    log = client.get_object(Bucket=bucket, Key=f"svc/jobs/{job_id}/predictions.jsonl")
    names = Counter(json.loads(line)["file_name"] for line in log["Body"].read().splitlines())
    assert names == Counter({p.name: 1 for p in images})
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"svc/jobs/{job_id}/predictions/")
    assert listed.get("KeyCount", 0) == 0  # the parts were folded
    with stack.client() as c:
        coco = c.get(f"/jobs/{job_id}/annotations").json()
        thumb = c.get(f"/jobs/{job_id}/images/0", params={"thumb": "true"})
        full = c.get(f"/jobs/{job_id}/images/1")
    assert [i["file_name"] for i in coco["images"]] == [p.name for p in images]
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert full.content == images[1].read_bytes()
    assert full.headers["content-type"] == "image/png"
    # Nothing of the job on the API's or the workers' local disks.
    for folder in stack.root.iterdir():
        if folder.is_dir():
            assert _image_bytes_under(folder) == [], folder
            assert not list(folder.rglob(job_id)), folder


def test_an_outage_of_the_bucket_loses_nothing(
        bucket_stack: tuple[ServiceStack, TcpProxy, str], unlabeled_images: list[Path]
        ) -> None:
    stack, proxy, _ = bucket_stack
    if not stack.live_workers():
        _worker(stack)
    images = unlabeled_images[:8]
    job_id = stack.submit(images, tta=SLOW)["id"]
    wait_for(lambda: stack.job(job_id)["progress"]["done"] >= 1, 90, "one image done",
             interval=0.1)
    proxy.cut()
    try:
        with stack.client() as c:
            down = c.get(f"/jobs/{job_id}")
        assert down.status_code == 503, down.text
        assert "storage" in down.json()["detail"]["message"]
        assert down.headers["Retry-After"]
        time.sleep(4)  # the worker waits for the bucket meanwhile
    finally:
        proxy.mend()
    job = stack.wait_job(job_id, timeout=120)
    assert job["progress"] == {"done": 8, "failed": 0, "total": 8}
    with stack.client() as c:
        coco = c.get(f"/jobs/{job_id}/annotations").json()
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(p.name for p in images)


def test_references_are_refused_without_an_allow_list(
        bucket_stack: tuple[ServiceStack, TcpProxy, str]) -> None:
    stack, _, bucket = bucket_stack
    with stack.client() as c:
        resp = c.post("/annotate", json={"source": f"s3://{bucket}/svc/"})
    assert resp.status_code == 403, resp.text
    assert "DISTILL_REFERENCE_ALLOW is empty" in resp.json()["detail"]["message"]


def test_a_missing_bucket_is_created_at_start_when_asked(s3_server: S3Server) -> None:
    name = f"new{s3_server.bucket()}"
    store = S3Storage(f"s3://{name}/p", client=s3_server.client(), retry_s=1)
    with pytest.raises(StorageUnavailableError, match="NoSuchBucket"):
        store.put("k", b"v")
    store.ensure_bucket()
    store.ensure_bucket()  # a second process starting at the same time
    store.put("k", b"v")
    assert store.get("k") == b"v"

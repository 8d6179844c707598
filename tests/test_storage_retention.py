"""Retention on both backends: a dataset's stored files go with its last job.

The dataset's COCO file and the list of jobs it was made over
(:mod:`jobs.datasets`) are written beside the jobs, so deleting the jobs alone
would leave them behind for ever; the local directory and a real S3 endpoint
(moto's server in its own process) must both drop them with the last job, and
keep them while any job of the dataset is left. The same holds when a key
deletes its jobs itself (``DELETE /jobs/{id}`` on a live API).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from jobs.datasets import COCO, JOBS, dataset_key
from jobs.maintenance import delete_expired_jobs
from jobs.records import JobRecord, JobRequest, JobState, JobStatus, utcnow
from jobs.s3 import S3Storage
from jobs.storage import LocalStorage, Storage
from jobs.store import JobStore
from tests.conftest import S3Server, ServiceStack


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Storage(f"s3://{server.bucket()}/svc", client=server.client(), retry_s=1)


def _job(store: JobStore, n: int, dataset: str, ended_days_ago: float) -> JobRecord:
    """A committed job of ``dataset`` that finished ``ended_days_ago`` days ago."""
    record = JobRecord(id=f"{n:032x}", owner="owner1", dataset=dataset,
                       created_at=utcnow() - timedelta(days=40, seconds=-n), files=[],
                       request=JobRequest(tta="identity", fusion="vote"), timeout_s=60)
    store.commit(store.staging(record.id), record)
    store.save_state(record.id, JobState(
        status=JobStatus.FINISHED, finished_at=utcnow() - timedelta(days=ended_days_ago)))
    return record


def _files(store: JobStore, dataset: str) -> list[bool]:
    return [store.storage.exists(dataset_key("owner1", dataset, name)) for name in (COCO, JOBS)]


def test_retention_removes_a_datasets_files_with_its_last_job(storage: Storage) -> None:
    store = JobStore(storage)
    old, recent = _job(store, 1, "ds", 30), _job(store, 2, "ds", 1)
    _job(store, 3, "kept", 0)  # ended just now
    for dataset, jobs in (("ds", [old, recent]), ("kept", [])):
        store.save_json(dataset_key("owner1", dataset, COCO), {"images": []})
        store.save_json(dataset_key("owner1", dataset, JOBS), {"jobs": [r.id for r in jobs]})

    # One of two jobs expired: the file is no longer current, but the dataset lives on.
    assert delete_expired_jobs(store, timedelta(days=7)) == 1
    assert store.load_job(old.id) is None and _files(store, "ds") == [True, True]

    # The last one goes: so do the dataset's files, and no other dataset's.
    assert delete_expired_jobs(store, timedelta(hours=1)) == 1
    assert store.index_ids("owner1", "ds") == []
    assert _files(store, "ds") == [False, False]
    assert _files(store, "kept") == [True, True]
    assert store.storage.children("datasets/owner1") == ["kept"]


def test_retention_keeps_the_files_of_a_dataset_that_still_holds_a_job(
        storage: Storage) -> None:
    store = JobStore(storage)
    _job(store, 1, "ds", 30)
    _job(store, 2, "ds", 0)  # ended just now: within the retention period
    store.save_json(dataset_key("owner1", "ds", COCO), {"images": []})
    assert delete_expired_jobs(store, timedelta(days=7)) == 1
    assert store.storage.exists(dataset_key("owner1", "ds", COCO))


def test_deleting_a_datasets_last_job_removes_its_files(
        make_stack: Callable[..., ServiceStack]) -> None:
    stack = make_stack(api=True, workers=0)
    store = JobStore(stack.data_dir)
    png = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(png, format="PNG")
    ids = []
    with stack.client() as c:
        for name in ("a.png", "b.png"):
            resp = c.post("/annotate", data={"dataset": "mine"},
                          files=[("files", (name, png.getvalue(), "image/png"))])
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])
        owner = store.load_job(ids[0]).owner  # type: ignore[union-attr]
        for job_id in ids:  # as a worker would leave them: finished
            store.save_state(job_id, JobState(status=JobStatus.FINISHED, finished_at=utcnow()))
        store.save_json(dataset_key(owner, "mine", COCO), {"images": []})
        assert c.delete(f"/jobs/{ids[0]}").json()["status"] == "deleted"
        assert store.storage.exists(dataset_key(owner, "mine", COCO))  # one job is left
        assert c.delete(f"/jobs/{ids[1]}").json()["status"] == "deleted"
    assert not store.storage.exists(dataset_key(owner, "mine", COCO))

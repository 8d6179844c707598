"""Which images a plan sent again leaves out (``jobs.held.HeldImages``): those a finished
job of the same checkpoint annotated, and no others (failed images, a job that failed,
was cancelled or is still running, another checkpoint, a batch of the same plan)."""

from __future__ import annotations

from pathlib import Path

from jobs.held import HeldImages
from jobs.records import (
    ImageError,
    JobRecord,
    JobRequest,
    JobState,
    JobStatus,
    StoredFile,
    utcnow,
)
from jobs.storage import LocalStorage
from jobs.store import JobStore

SHA = "a" * 64


def _job(store: JobStore, n: int, status: JobStatus, *, sha: str = SHA, plan: str = "old",
         failed: tuple[str, ...] = (), cancelled: bool = False) -> str:
    record = JobRecord(
        id=f"{n:032x}", owner="o", dataset="ds", created_at=utcnow(), plan=plan,
        files=[StoredFile(name=m, stored="", bytes=0, width=0, height=0, sha256="0" * 64)
               for m in ("a.png", "b.png")],
        request=JobRequest(tta="identity", fusion="vote"), timeout_s=60, teacher_sha256=sha,
        cancelled_at=utcnow() if cancelled else None)
    store.commit(store.staging(record.id), record)
    store.save_state(record.id, JobState(status=status, total=2, done=2 - len(failed),
                                         failed=len(failed), teacher_sha256=sha,
                                         errors=[ImageError(file_name=m, error="broken")
                                                 for m in failed]))
    return record.id


def test_only_images_a_finished_job_of_the_checkpoint_annotated_are_held(tmp_path: Path
                                                                         ) -> None:
    store = JobStore(tmp_path / "store")
    held = HeldImages(store, "new", SHA)
    done = _job(store, 1, JobStatus.FINISHED, failed=("b.png",))
    assert held.annotated(done, "a.png") and not held.annotated(done, "b.png")
    for n, job in enumerate([
            dict(status=JobStatus.FAILED), dict(status=JobStatus.RUNNING),
            dict(status=JobStatus.FINISHED, sha="b" * 64),
            dict(status=JobStatus.FINISHED, plan="new"),
            dict(status=JobStatus.FINISHED, cancelled=True)], start=2):
        job_id = _job(store, n, **job)  # type: ignore[arg-type]
        assert not held.annotated(job_id, "a.png"), job
    assert not held.annotated("f" * 32, "a.png")  # a job that is gone
    assert not HeldImages(store, "new", None).annotated(done, "a.png")  # no checkpoint known


def test_holders_are_read_side_by_side_on_a_store_that_takes_it(tmp_path: Path) -> None:
    class Parallel(LocalStorage):
        parallel_reads = 4

    store = JobStore(Parallel(tmp_path / "store"))
    done = [_job(store, n, JobStatus.FINISHED) for n in range(1, 6)]
    failed = _job(store, 9, JobStatus.FAILED)
    held = HeldImages(store, "new", SHA)
    held.prefetch({*done, failed, "f" * 32})
    assert all(held.annotated(j, "b.png") for j in done)
    assert not held.annotated(failed, "a.png") and not held.annotated("f" * 32, "a.png")

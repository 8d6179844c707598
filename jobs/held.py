"""Images a dataset holds already, annotated: what a plan sent again does not redo.

A by-reference request sent again into its dataset (``distill client annotate`` does so
when batch jobs of the first one failed or were lost) names its images by the upload
rule, so an image the dataset holds with the same identity (URI, ETag, size) keeps its
name. The dataset's file keeps the oldest job's annotation of a name, so annotating
such an image again would cost a teacher pass whose result is thrown away. It is left
out of the new batches when the job holding it finished, annotated it (it is not among
the job's failed images), ran the same checkpoint, and is not a batch of this very plan
(a plan resuming after its worker died makes its own batches as before). Held images
stay in the older jobs only: deleting those (or retention) takes them out of the
dataset, and the next plan sent again annotates them again.
"""

from __future__ import annotations

from jobs.records import JobStatus
from jobs.storage import read_all
from jobs.store import DamagedRecordError, JobStore


class HeldImages:
    """Which held images a plan leaves out; each holder job is read once (record and
    state), however many of its images the plan lists."""

    def __init__(self, store: JobStore, plan_id: str, teacher_sha256: str | None) -> None:
        self.store, self.plan_id, self.teacher_sha256 = store, plan_id, teacher_sha256
        self._annotated: dict[str, frozenset[str]] = {}

    def prefetch(self, job_ids: set[str]) -> None:
        """Reads the holder jobs not read yet, side by side on a bucket (a plan's page of
        names has a few dozen holders, each two reads away)."""
        todo = [i for i in job_ids if i not in self._annotated]
        self._annotated.update(zip(todo, read_all(self.store.storage, self._read, todo),
                                   strict=True))

    def annotated(self, job_id: str, name: str) -> bool:
        """True if job ``job_id`` (the newest holder of ``name``) annotated it for good."""
        if job_id not in self._annotated:
            self._annotated[job_id] = self._read(job_id)
        return name in self._annotated[job_id]

    def _read(self, job_id: str) -> frozenset[str]:
        try:
            record, state = self.store.load_job(job_id), self.store.load_state(job_id)
        except DamagedRecordError:
            return frozenset()
        if (record is None or state is None or record.cancelled_at is not None
                or state.status != JobStatus.FINISHED or record.plan == self.plan_id
                or self.teacher_sha256 is None
                or (state.teacher_sha256 or record.teacher_sha256) != self.teacher_sha256):
            return frozenset()
        failed = {e.file_name for e in state.errors}
        return frozenset(f.name for f in record.files if f.name not in failed)

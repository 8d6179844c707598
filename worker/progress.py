"""A running job's progress: its prediction log and the counts the API shows, and the
check that the job was not cancelled meanwhile (:mod:`worker.tasks` runs the job)."""

from __future__ import annotations

import time

from distill.predictions import ImageRecord, PredictionLog
from jobs.predlog import sync_log
from jobs.records import ImageError, JobRecord, JobState
from jobs.store import JobStore

SYNC_S = 1.0  # on a bucket: seconds between stored progress reports of a running job


class JobCancelledError(Exception):
    """The job was cancelled or deleted through the API while it ran."""


class Progress:
    """The job's prediction log and the counts the API shows. The log is read once here
    for the counts; afterwards each batch's outcomes arrive through :meth:`on_batch`.

    On a bucket, progress (the log's new part, the state, the cancellation check) is
    stored about once a second instead of after every batch: a fast model never waits on
    the bucket per image, and a restart redoes at most that second's images."""

    def __init__(self, store: JobStore, job_id: str, state: JobState, log_file: PredictionLog,
                 names: set[str]) -> None:
        self.store, self.job_id, self.state, self.log_file = store, job_id, state, log_file
        self.outcomes = {n: r.error for n, r in log_file.read().items() if n in names}
        _count(state, self.outcomes)
        store.save_state(job_id, state)
        local = store.storage.local_path(store.job_key(job_id)) is not None
        self.every = 0.0 if local else SYNC_S
        self._due = _Every(self.every)

    def report(self) -> None:
        """Stores the log, then the counts (never counting an image not stored), and
        raises JobCancelledError when the job was cancelled meanwhile."""
        sync_log(self.log_file)
        _count(self.state, self.outcomes)
        self.store.save_state(self.job_id, self.state)
        check_not_cancelled(self.store, self.job_id)

    def on_batch(self, batch: list[ImageRecord]) -> None:
        """Counts a batch appended to the log; reports when one is due."""
        self.outcomes.update({r.file_name: r.error for r in batch})
        if self._due():
            self.report()

    def on_failed(self, name: str, error: str) -> None:
        """An image that could not be fetched: a failed record in the log."""
        failed = [ImageRecord.failed(name, error)]
        self.log_file.append(failed)
        self.on_batch(failed)


def _count(state: JobState, outcomes: dict[str, str | None]) -> None:
    state.done = sum(e is None for e in outcomes.values())
    state.failed = len(outcomes) - state.done
    state.errors = [ImageError(file_name=n, error=e) for n, e in sorted(outcomes.items())
                    if e is not None]


class _Every:
    """Calling it answers True at most once per ``seconds`` (always, for 0)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def check_not_cancelled(store: JobStore, job_id: str) -> None:
    """Raises JobCancelledError when the job was cancelled or deleted through the API."""
    record: JobRecord | None = store.load_job(job_id)
    if record is None or record.cancelled_at is not None:
        raise JobCancelledError(job_id)

"""A running job's prediction log, wherever the store is.

On a local directory the worker appends to ``jobs/<id>/predictions.jsonl`` in
place (fsynced per batch), as always. On a bucket, where an object cannot be
appended to, the worker appends to a file in its own cache and stores what it
appended since the last time as one more numbered part
(``jobs/<id>/predictions/000003.jsonl``, one atomic PUT) when :func:`sync_log`
says so, which the worker does before it reports progress (about once a
second, so that a fast model does not wait on the bucket after every image);
a restarted attempt, on any machine, rebuilds its file from the stored parts
and goes on numbering after them, so it skips every image it reported done
(at most the last second's images are redone). When the job ends, :meth:`StoredLog.seal`
folds the parts into ``predictions.jsonl``. Readers (:meth:`JobStore.read_predictions`)
read the log and then the parts, later records winning, so a reader never
misses a finished batch, even in the middle of the folding.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from distill.predictions import ImageRecord, PredictionLog, encode_records
from jobs.store import LOG, PARTS, JobStore


class StoredLog(PredictionLog):
    """A :class:`PredictionLog` in the worker's cache whose batches are also stored."""

    def __init__(self, store: JobStore, job_id: str, cache: Path) -> None:
        super().__init__(Path(cache) / LOG)
        self.store, self.job_id = store, job_id
        self.path.unlink(missing_ok=True)  # the store, not an older cache, is the truth
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = store.log_keys(job_id)
        with open(self.path, "wb") as fh:
            for key in keys:
                last = b"\n"
                for chunk in store.storage.chunks(key) or ():
                    fh.write(chunk)
                    last = chunk[-1:] or last
                if last != b"\n":
                    fh.write(b"\n")  # only a damaged object ends mid-line: seal it
        self._parts = len(keys) - 1
        self._pending: list[str] = []
        self._next = max((_number(k) for k in keys[1:]), default=-1) + 1

    def append(self, records: Iterable[ImageRecord]) -> None:
        """Appends records to the cached file; :meth:`flush` stores them."""
        batch = list(records)
        self._pending.append(encode_records(batch))
        super().append(batch)

    def flush(self) -> None:
        """Stores what was appended since the last flush as the next part."""
        lines = "".join(self._pending)
        if not lines:
            return
        self.store.storage.put(self.store.job_key(self.job_id, PARTS, f"{self._next:06d}.jsonl"),
                               lines.encode("utf-8"))
        self._pending.clear()
        self._next += 1
        self._parts += 1

    def seal(self) -> None:
        """Folds the parts into ``predictions.jsonl`` (the log first, then the parts go)."""
        self.flush()
        if self._parts == 0:
            return
        with open(self.path, "rb") as fh:
            self.store.storage.put(self.store.job_key(self.job_id, LOG), fh)
        self.store.storage.delete_tree(self.store.job_key(self.job_id, PARTS))
        self._parts = 0


def open_log(store: JobStore, job_id: str, cache: Path) -> PredictionLog:
    """The log a worker appends to: in place in a local directory, else a :class:`StoredLog`."""
    path = store.storage.local_path(store.job_key(job_id, LOG))
    if path is not None:
        return PredictionLog(path)
    return StoredLog(store, job_id, cache)


def sync_log(log: PredictionLog) -> None:
    """Stores what a stored log appended since its last part (nothing to do in a local
    directory, where every append is on disk when it returns)."""
    if isinstance(log, StoredLog):
        log.flush()


def seal_log(log: PredictionLog) -> None:
    """Folds a stored log's parts into one object (nothing to do in a local directory)."""
    if isinstance(log, StoredLog):
        log.seal()


def _number(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[-1].split(".", 1)[0])
    except ValueError:
        return -1

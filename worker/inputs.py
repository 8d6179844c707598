"""A job's images as the teacher reads them: straight from a local store, or fetched into
the worker's cache (a bucket's uploads), a few at a time ahead of the model.

The cache is the worker's own folder (never a path another process wrote);
:func:`cached` removes a job's part of it when the job ends, and a worker
removes the folders of dead workers (:func:`claim_cache`) when it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distill.annotate import ImageSource
from distill.errors import DistillError
from jobs.records import JobRecord, StoredFile
from jobs.references import ReferenceError, References
from jobs.store import JobStore

log = logging.getLogger(__name__)
FETCH_THREADS = 8  # objects fetched at once: enough to stay ahead of a GPU
# Called with an image that could not be fetched and why (a per-image error).
FetchFailed = Callable[[str, str], None]


class FetchError(DistillError):
    """One image could not be fetched; the message says why (a per-image error)."""


def claim_cache(root: Path, worker: str) -> Path:
    """This worker's cache folder under ``root``, locked for the life of the process; the
    folders of workers that died without cleaning up (their lock is free) are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name == worker or not folder.is_dir():
            continue
        fd = _lock(folder)
        if fd is not None:  # nobody holds it: its worker is gone
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
    mine = root / worker
    mine.mkdir(exist_ok=True)
    fd = _lock(mine)
    if fd is None:
        raise DistillError(f"cache folder {mine} is held by another worker of this name")
    _HELD.append(fd)  # released by the kernel when the process ends, however it ends
    return mine


def _lock(folder: Path) -> int | None:
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


_HELD: list[int] = []


@contextlib.contextmanager
def cached(folder: Path) -> Iterator[Path]:
    """The job's cache folder, removed when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def image_sources(store: JobStore, record: JobRecord, skip: set[str], cache: Path,
                  on_failed: FetchFailed, references: References | None = None
                  ) -> Iterator[ImageSource]:
    """``(name, path)`` of every image of the job not in ``skip``, in the record's order,
    fetched ahead in threads; an image that cannot be fetched goes to ``on_failed``."""
    todo = [f for f in record.files if f.name not in skip]

    def fetch(f: StoredFile) -> Path | str:
        try:
            if f.source is not None:
                if references is None:
                    raise FetchError("this worker cannot read references")
                target = cache / "refs" / f.sha256
                if not target.exists():
                    references.fetch(f.source, target)
                return target
            key = store.image_key(record.id, f.stored)
            local = store.storage.local_path(key)
            if local is not None:
                return local
            target = cache / "images" / f.stored
            if not target.exists() and not store.storage.download(key, target):
                raise FetchError(f"the image of {f.name} is no longer stored")
            return target
        except (FetchError, ReferenceError) as exc:
            return str(exc)

    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch") as pool:
        for f, got in zip(todo, pool.map(fetch, todo), strict=True):
            if isinstance(got, str):
                on_failed(f.name, got)
            else:
                yield f.name, got

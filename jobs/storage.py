"""The storage layer: every byte the API and the workers exchange goes through it.

Keys are relative, ``/``-separated names (``jobs/<id>/job.json``); two backends
hold them:

- :class:`LocalStorage`: a directory (the default, one machine or one shared
  volume). A key is a file under the root; every write is atomic (temp file,
  fsync, rename), so a reader sees the old bytes or the new ones.
- :class:`jobs.s3.S3Storage`: an S3-compatible bucket (``DISTILL_STORAGE=
  s3://BUCKET/PREFIX``), where every PUT is atomic by itself. API and workers
  on different machines then share only Redis and the bucket.

Each object has a single writer (see :mod:`jobs.store`), so neither backend
needs locks. Listing (:meth:`Storage.children`) returns the names directly
under a folder, sorted, as a directory listing does.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from distill.errors import DistillError
from distill.fileio import atomic_writer

CHUNK = 1024 * 1024
# A key part: no empty parts, no "." or "..", no backslash or control characters.
_PART = re.compile(r"^(?!\.{1,2}$)[^/\\\x00-\x1f]{1,255}$")


class StorageError(DistillError):
    """Something the storage cannot do with what it was given."""


class StorageUnavailableError(StorageError):
    """The storage could not be reached (a bucket that does not answer); retry later."""


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key; raises :class:`StorageError` otherwise, so that
    no key can name a path outside the store."""
    if not key or key.startswith("/") or not all(_PART.match(p) for p in key.split("/")):
        raise StorageError(f"malformed storage key {key!r}")
    return key


def join(*parts: str) -> str:
    """A key from parts (``join("jobs", id, "job.json")``), checked."""
    return check_key("/".join(p.strip("/") for p in parts if p))


class Storage(ABC):
    """Objects under keys: put, get, list, delete, and the few extras jobs need."""

    url: str  # where the store is, for messages (never with credentials)
    # Reads worth having in flight at once: a local directory answers at once, a bucket
    # after a round trip (its latency, not its bandwidth, bounds a run of small reads).
    parallel_reads: int = 1

    @abstractmethod
    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        """Stores ``data`` (bytes or a binary stream) under ``key``, atomically."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when there is none."""

    @abstractmethod
    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes] | None:
        """The object's bytes in pieces (memory stays flat), None when there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def children(self, prefix: str) -> list[str]:
        """Names directly under the folder ``prefix`` (objects and sub-folders), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Removes one object (nothing when it is missing)."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Removes every object under the folder ``prefix``."""

    @abstractmethod
    def download(self, key: str, path: Path) -> bool:
        """Copies the object into the local file ``path``; False when there is none."""

    def staging(self, prefix: str) -> str:
        """Where to build a new folder that :meth:`publish` makes visible at ``prefix``;
        on a bucket the folder itself (an object store has no folder to rename)."""
        return prefix

    def publish(self, staging: str, prefix: str) -> None:  # noqa: B027 - a no-op by default
        """Makes a folder built under :meth:`staging` visible at ``prefix`` (on a bucket,
        where the folder was built in place, there is nothing to do)."""

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when the store is a local directory, else None."""
        return None

    def presign(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        """A URL that downloads the object without credentials; None when the store has
        no such URLs (a local directory)."""
        return None


_T = TypeVar("_T")
_R = TypeVar("_R")

# Reader threads of the whole process, shared by every read_all (an API answering many
# polls of large datasets at once holds at most this many, not 8 per request).
READ_THREADS = 16
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child (RQ's work horse) the parent's threads do not exist: start anew."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _reader_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="reads")
        return _pool


def read_all(storage: Storage, read: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``read`` of each item, in order: one after the other on a local directory, at most
    ``storage.parallel_reads`` at a time on a bucket (whose round trips they overlap), on
    the process's shared reader threads. A read's exception is raised, and the reads
    not started yet are cancelled; ``read`` must not call :func:`read_all` itself."""
    todo = list(items)
    if storage.parallel_reads <= 1 or len(todo) <= 1:
        return [read(i) for i in todo]
    pool = _reader_pool()
    # Each call keeps its own window in flight, so concurrent calls interleave on the
    # shared threads instead of one long count queueing ahead of every other request.
    window = threading.BoundedSemaphore(storage.parallel_reads)
    failed = threading.Event()

    def done(future: Future[_R]) -> None:
        try:
            if not future.cancelled() and future.exception() is not None:
                failed.set()
        finally:
            window.release()

    futures: list[Future[_R]] = []
    try:
        for item in todo:
            window.acquire()
            if failed.is_set():
                window.release()
                break  # a read failed: start no more
            future = pool.submit(read, item)
            future.add_done_callback(done)
            futures.append(future)
        return [f.result() for f in futures]
    finally:
        # After a failure, the reads still queued would hold the shared threads for a
        # result nobody wants (on a bucket that stopped answering, a minute each).
        for f in futures:
            f.cancel()


class LocalStorage(Storage):
    """Keys as files under ``root`` (the layout of earlier versions, unchanged)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        """The file of ``key`` (checked, so never outside the root)."""
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        with atomic_writer(self.path(key)) as fh:
            if isinstance(data, bytes | bytearray):
                fh.write(data)
            else:
                shutil.copyfileobj(data, fh, CHUNK)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes] | None:
        try:
            fh = open(self.path(key), "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

        def read() -> Iterator[bytes]:
            with fh:
                yield from iter(lambda: fh.read(size), b"")
        return read()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def children(self, prefix: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        # Renamed first, so that a half-deleted folder is never read.
        path = self.path(prefix)
        trash = path.with_name(f".deleted-{path.name}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def download(self, key: str, path: Path) -> bool:
        source = self.path(key)
        if not source.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return True

    def staging(self, prefix: str) -> str:
        head, _, name = prefix.rpartition("/")
        return join(head, f".staging-{name}")

    def publish(self, staging: str, prefix: str) -> None:
        source = self.path(staging)
        source.mkdir(parents=True, exist_ok=True)
        for folder in (p for p in source.rglob("*") if p.is_dir()):
            fsync_dir(folder)
        os.rename(source, self.path(prefix))
        fsync_dir(self.path(prefix).parent)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new entry in the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_storage(spec: str | None, data_dir: Path, *, endpoint_url: str | None = None,
                 retry_s: float = 60.0, create: bool = False) -> Storage:
    """The store a setting names: ``s3://BUCKET/PREFIX`` (boto3; ``endpoint_url`` for a
    non-AWS server; bucket unreachable: retried for ``retry_s`` seconds, then
    :class:`StorageUnavailableError`; ``create``: the bucket is made if missing), else the
    local directory ``data_dir``."""
    if spec and spec.startswith("s3://"):
        from jobs.s3 import S3Storage

        bucket = S3Storage(spec, endpoint_url=endpoint_url, retry_s=retry_s)
        if create:
            bucket.ensure_bucket()
        return bucket
    if spec:
        raise StorageError(f"DISTILL_STORAGE={spec!r}: use s3://BUCKET/PREFIX, or leave it "
                           "unset for the local data directory")
    return LocalStorage(data_dir)

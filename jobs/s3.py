"""The S3-compatible backend of :mod:`jobs.storage` (boto3), and the client it shares with
the references' reader (:mod:`jobs.references`).

``DISTILL_STORAGE=s3://BUCKET/PREFIX`` puts every key under ``PREFIX/`` in
``BUCKET``; ``DISTILL_S3_ENDPOINT_URL`` names a non-AWS server (path-style
addressing then); credentials come from the standard AWS environment and
config files, never from the settings. A bucket that does not answer is retried
with backoff for ``retry_s`` seconds (a worker waits out a short outage without
losing anything), then :class:`jobs.storage.StorageUnavailableError` is raised
(the API answers 503).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from distill.fileio import atomic_writer
from jobs.storage import CHUNK, Storage, StorageError, StorageUnavailableError, check_key

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                ReadTimeoutError)
_MISSING = {"NoSuchKey", "404", "NotFound"}
_RETRIED_CODES = {"500", "502", "503", "504", "SlowDown", "InternalError", "RequestTimeout"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); raises StorageError."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket")
    return bucket, prefix


def make_client(endpoint_url: str | None, *, pool: int = 32) -> Any:
    """A boto3 S3 client (thread-safe) for AWS or, with ``endpoint_url``, another server;
    short timeouts, so that an outage is noticed and retried by :func:`call`."""
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3,
                    read_timeout=30, max_pool_connections=pool,
                    s3={"addressing_style": "path"} if endpoint_url else None)
    session = botocore.session.get_session()
    # Nothing here reads an object's LastModified; left a string, a listing page of 1,000
    # keys costs about 40 % less CPU (a plan of 100,000 references lists 100 of them).
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return boto3.session.Session(botocore_session=session).client(
        "s3", endpoint_url=endpoint_url, config=config)


def error_code(exc: ClientError) -> str:
    """The S3 error code of a failed call (``NoSuchKey``, ``AccessDenied``, ``404``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def call(fn: Callable[[], _T], *, retry_s: float, what: str) -> _T:
    """Runs one S3 call, retrying connection failures and 5xx answers with backoff for
    ``retry_s`` seconds; raises StorageUnavailableError once they are spent."""
    deadline = time.monotonic() + retry_s
    delay = 0.25
    while True:
        try:
            return fn()
        except ClientError as exc:
            if error_code(exc) not in _RETRIED_CODES:
                raise
            failure: Exception = exc
        except (*_UNREACHABLE, BotoCoreError) as exc:
            if not isinstance(exc, _UNREACHABLE):
                raise
            failure = exc
        if time.monotonic() + delay > deadline:
            raise StorageUnavailableError(f"the storage is unreachable ({what}): "
                                          f"{failure}") from failure
        log.warning("storage unreachable (%s), retrying in %.1fs: %s", what, delay, failure)
        time.sleep(delay)
        delay = min(4.0, delay * 2)


class S3Storage(Storage):
    """Keys as objects under ``s3://BUCKET/PREFIX/``."""

    parallel_reads = 8

    def __init__(self, uri: str, *, endpoint_url: str | None = None, retry_s: float = 60.0,
                 client: Any = None) -> None:
        self.bucket, prefix = parse_s3_uri(uri.rstrip("/"))
        self.prefix = prefix.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.retry_s = retry_s
        self.client = client or make_client(endpoint_url)

    def ensure_bucket(self) -> None:
        """Creates the bucket unless it exists (a compose stack's first start, waiting up to a
        minute for its server); several processes starting together may all try."""
        try:
            self._call("looking up the bucket",
                       lambda: self.client.head_bucket(Bucket=self.bucket), retry_s=60)
            return
        except ClientError as exc:
            if error_code(exc) not in _MISSING | {"NoSuchBucket"}:
                raise
        try:
            self._call("creating the bucket",
                       lambda: self.client.create_bucket(Bucket=self.bucket))
            log.info("created bucket %s", self.bucket)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], _T], retry_s: float | None = None) -> _T:
        try:
            return call(fn, retry_s=self.retry_s if retry_s is None else retry_s,
                        what=f"{what} in {self.url}")
        except ClientError as exc:
            if error_code(exc) in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId",
                                   "SignatureDoesNotMatch"):
                raise StorageUnavailableError(
                    f"the storage {self.url} refused {what}: {error_code(exc)} "
                    "(check the bucket and the credentials)") from exc
            raise

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        name = self._key(key)

        def put() -> None:
            if isinstance(data, bytes | bytearray):
                self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data))
            else:
                data.seek(0)  # a retried upload starts again from the beginning
                self.client.upload_fileobj(data, self.bucket, name)
        self._call(f"writing {key}", put)

    def _get_object(self, key: str) -> Any:
        name = self._key(key)
        try:
            return self._call(f"reading {key}",
                              lambda: self.client.get_object(Bucket=self.bucket, Key=name))
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise

    def get(self, key: str) -> bytes | None:
        obj = self._get_object(key)
        if obj is None:
            return None
        data: bytes = self._call(f"reading {key}", obj["Body"].read)
        return data

    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes] | None:
        obj = self._get_object(key)
        if obj is None:
            return None
        body = obj["Body"]

        def read() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(size)
            finally:
                body.close()
        return read()

    def exists(self, key: str) -> bool:
        name = self._key(key)
        try:
            self._call(f"looking up {key}",
                       lambda: self.client.head_object(Bucket=self.bucket, Key=name))
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return False
            raise
        return True

    def _list(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix) + "/"}
        if delimiter:
            args["Delimiter"] = delimiter
        while True:
            page: dict[str, Any] = self._call(f"listing {prefix}",
                                              partial(self.client.list_objects_v2, **args))
            yield page
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def children(self, prefix: str) -> list[str]:
        names: set[str] = set()
        start = len(self._key(prefix)) + 1
        for page in self._list(prefix, "/"):
            names.update(p["Prefix"][start:].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][start:] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def delete(self, key: str) -> None:
        name = self._key(key)
        self._call(f"deleting {key}",
                   lambda: self.client.delete_object(Bucket=self.bucket, Key=name))

    def delete_tree(self, prefix: str) -> None:
        keys = [o["Key"] for page in self._list(prefix, None) for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            self._call(f"deleting {prefix}", partial(self.client.delete_objects,
                                                     Bucket=self.bucket, Delete=batch))

    def download(self, key: str, path: Path) -> bool:
        pieces = self.chunks(key)
        if pieces is None:
            return False
        with atomic_writer(path) as fh:
            for piece in pieces:
                fh.write(piece)
        return True

    def presign(self, key: str, expires_s: int, filename: str | None = None) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url: str = self.client.generate_presigned_url("get_object", Params=params,
                                                      ExpiresIn=int(expires_s))
        return url

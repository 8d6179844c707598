"""A task's image, found the way Label Studio's SDK finds it (``get_local_path`` in
label_studio_sdk ``_extensions/label_studio_tools/core/utils/io.py``):

- ``/data/upload/...`` (files uploaded to Label Studio; first as
  ``/storage-data/uploaded/?filepath=upload/...``, where a Label Studio with cloud-backed
  uploads serves them), ``/data/local-files/?d=...`` (its local storage) and other paths:
  from Label Studio, with its key;
- ``s3://``, ``gs://``, ``azure-blob://``: through the task's presign endpoint
  (``/tasks/<id>/presign/?fileuri=<base64>``), which redirects to a presigned URL, so the
  service needs no bucket credentials;
- ``http(s)://``: directly, with the key only when the host is Label Studio's.

Every fetch goes through :func:`.safety.fetch`: only Label Studio's own origin may be
internal. The key is sent as ``Authorization: Token <key>``; a personal access token (a
JWT) is first exchanged for an access token (``POST /api/token/refresh``), as the SDK does.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from service.integrations.labelstudio.safety import Origin, UnsafeURLError, fetch, origin

CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://", "azure-spi://")
ACCESS_TOKEN_S = 240  # Label Studio's access tokens live 5 minutes: renew before


@dataclass
class LabelStudio:
    """Where Label Studio is and how to read from it; thread-safe."""

    url: str | None
    key: str | None
    timeout_s: float = 30.0
    _access: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/") if self.url else None
        self.http = httpx.Client(timeout=self.timeout_s)

    @property
    def trusted(self) -> set[Origin]:
        """The origins that may be internal: Label Studio's only."""
        return {origin(self.url)} if self.url else set()

    def image_urls(self, value: object, task_id: object) -> list[str]:
        """The URLs to try for a task's image, in order; an :class:`UnsafeURLError` saying
        why there are none."""
        if not isinstance(value, str) or not value.strip():
            raise UnsafeURLError(f"the task's image field is {str(value)[:80]!r}, not a URL")
        value = value.strip()
        if value.startswith(("http://", "https://")):
            return [value]
        if not self.url:
            raise UnsafeURLError(f"{value[:80]!r} is on Label Studio, whose address this "
                                 "service does not know: set LABEL_STUDIO_URL")
        if value.startswith(CLOUD_SCHEMES):
            if not isinstance(task_id, int):
                raise UnsafeURLError("a cloud storage URL needs the task's id to presign it")
            uri = base64.urlsafe_b64encode(value.encode()).decode()
            return [f"{self.url}/tasks/{task_id}/presign/?fileuri={uri}"]
        if value.startswith("upload/"):
            value = "/data/" + value
        if not value.startswith("/") or value.startswith("//"):
            raise UnsafeURLError(f"{value[:80]!r} is neither a URL nor a Label Studio path")
        if value.startswith("/data/upload/"):  # where a cloud-backed Label Studio keeps them
            stored = quote(value.removeprefix("/data/"), safe="/")
            return [f"{self.url}/storage-data/uploaded/?filepath={stored}", self.url + value]
        return [self.url + value]

    def fetch(self, urls: list[str], max_bytes: int) -> bytes:
        """The bytes at the first of ``urls`` that answers, with Label Studio's key where
        it is Label Studio's; the last one's error when none does."""
        auth = self._auth() if self.key and self.url else None
        for n, url in enumerate(urls, 1):
            try:
                return fetch(self.http, url, trusted=self.trusted, auth=auth,
                             max_bytes=max_bytes)
            except UnsafeURLError:
                if n == len(urls):
                    raise
        raise UnsafeURLError("no URL to fetch the image from")

    @property
    def writable(self) -> bool:
        """Whether predictions can be written to Label Studio (its URL and a key known)."""
        return bool(self.url and self.key)

    def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """``GET`` of Label Studio's API (``path`` from ``/api/``) with its key."""
        return self._call("GET", path, params=params)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """``POST`` of a JSON body to Label Studio's API with its key."""
        return self._call("POST", path, json=body)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.url:
            raise UnsafeURLError("no Label Studio URL: set LABEL_STUDIO_URL or pass --url")
        try:
            r = self.http.request(method, self.url + path, **kwargs,
                                  headers=self._auth() if self.key else {})
            return r.raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            raise UnsafeURLError(f"Label Studio: {method} {path}: {exc}") from exc

    def _auth(self) -> dict[str, str]:
        key = str(self.key)
        if key.count(".") != 2:  # a legacy token
            return {"Authorization": f"Token {key}"}
        with self._lock:
            if self._access is None or self._access[1] < time.monotonic():
                try:
                    r = self.http.post(f"{self.url}/api/token/refresh", json={"refresh": key})
                    access = str(r.raise_for_status().json()["access"])
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    raise UnsafeURLError(f"Label Studio refused the personal access token "
                                         f"(LABEL_STUDIO_API_KEY): {exc}") from exc
                self._access = (access, time.monotonic() + ACCESS_TOKEN_S)
            return {"Authorization": f"Bearer {self._access[0]}"}

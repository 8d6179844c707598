"""Fetching a URL that a user gave, without letting it reach internal addresses.

A task's image URL comes from whoever made the task; fetched naively it would turn the
API into a proxy into its own network (cloud metadata at 169.254.169.254, Redis, admin
ports). Every hop (the URL and each redirect) must be http(s), carry no credentials and
resolve only to global addresses, unless its origin is one the operator trusts (the
configured Label Studio, which is usually on the private network). Credentials
(``auth``) go only to a trusted origin. The body is read up to a size limit.

Kept in one module so that the service's other by-reference inputs can share it.
Residual risk: the name is resolved here and again by the HTTP client, so a DNS answer
that changes in between (rebinding) is not caught.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

import httpx

from distill.errors import DistillError

MAX_REDIRECTS = 5
Origin = tuple[str, str, int]


class UnsafeURLError(DistillError):
    """The URL (or a redirect) is refused, or its body could not be fetched; says why."""


def origin(url: str) -> Origin:
    """(scheme, host, port) of an http(s) URL; an :class:`UnsafeURLError` for others."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURLError(f"{url[:200]!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise UnsafeURLError("URLs with credentials in them are refused")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURLError(f"{url[:200]!r} has a bad port") from exc
    return scheme, parts.hostname.lower(), port


def check_public(url: str, trusted: Iterable[Origin] = ()) -> Origin:
    """The URL's origin when it is trusted or every address of its host is global."""
    where = origin(url)
    if where in set(trusted):
        return where
    try:
        infos = socket.getaddrinfo(where[1], where[2], type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURLError(f"cannot resolve host {where[1]!r}: {exc}") from exc
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if not (mapped or ip).is_global:
            raise UnsafeURLError(f"host {where[1]!r} resolves to the internal address {ip}; "
                                 "only the configured Label Studio may be internal")
    return where


def fetch(client: httpx.Client, url: str, *, trusted: Iterable[Origin] = (),
          auth: dict[str, str] | None = None, max_bytes: int) -> bytes:
    """The body of ``url`` (following checked redirects), at most ``max_bytes``."""
    trusted = set(trusted)
    for _ in range(MAX_REDIRECTS + 1):
        where = check_public(url, trusted)
        headers = auth if auth and where in trusted else {}
        try:
            with client.stream("GET", url, headers=headers, follow_redirects=False) as r:
                if r.is_redirect and r.headers.get("location"):
                    url = urljoin(url, r.headers["location"])
                    continue
                if r.status_code != 200:
                    raise UnsafeURLError(f"GET {_short(url)}: HTTP {r.status_code}")
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise UnsafeURLError(f"{_short(url)} is larger than {max_bytes} bytes")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise UnsafeURLError(f"GET {_short(url)}: {type(exc).__name__}: {exc}") from exc
    raise UnsafeURLError(f"more than {MAX_REDIRECTS} redirects")


def _short(url: str) -> str:
    """The URL without its query (presigned URLs carry signatures there)."""
    return urlsplit(url)._replace(query="", fragment="").geturl()[:200]

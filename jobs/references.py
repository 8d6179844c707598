"""Images referenced where they are: ``s3://bucket/key`` objects and ``https://`` URLs.

Safety first (no server-side request forgery): a reference is read only when
it starts with an entry of ``DISTILL_REFERENCE_ALLOW`` (empty: every reference
is refused); an http(s) host that resolves to a loopback, link-local, private
or otherwise internal address is refused unless the allow-list names that
address itself (``http://10.0.0.5:8080/``); every redirect is checked the same
way before it is followed; an object larger than the upload limit is not read
past it. The API checks a request's references before it accepts them; the
worker checks every URL again when it fetches it (a name may resolve
elsewhere by then), with its own allow-list (set the same on both), and
connects to the very address it checked (the host's name goes in the Host
header and the TLS server name): a name that resolves to a public address for
the check and to an internal one for the connection (DNS rebinding) gains
nothing.

Workers read with their own credentials: ``s3://`` through boto3 (the standard
AWS configuration, ``DISTILL_S3_ENDPOINT_URL`` for another server), URLs
through httpx. Credentials never travel in a job.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from botocore.exceptions import ClientError

from distill.errors import DistillError
from distill.fileio import atomic_writer
from jobs.s3 import call, error_code, make_client, parse_s3_uri

MAX_REDIRECTS = 5
# Keys asked for per listing page. AWS S3 answers at most 1,000 whatever is asked; servers
# that honour more (moto does) save their fixed cost per page, which in moto is a scan of
# the whole bucket: 100,000 keys list in a third of the time in pages of 10,000.
LIST_PAGE = 10_000
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ReferenceError(DistillError):
    """A reference that is refused or cannot be read; the message names it and why."""


class ReferencesRefusedError(ReferenceError):
    """This service reads no references at all (an empty allow-list)."""


@dataclass(frozen=True)
class ListedObject:
    """One object of a listed source: its URI, its key below the source, ETag and size."""

    uri: str
    relative: str
    etag: str
    size: int


@dataclass
class References:
    """The allow-list and the readers; one per process."""

    allow: list[str]
    endpoint_url: str | None = None
    max_bytes: int = 32 * 1024 * 1024
    # What https certificates are checked against (httpx's ``verify``: the system's CAs by
    # default; tests pass a context that trusts their own CA).
    verify: ssl.SSLContext | bool = field(default=True, repr=False)
    _client: Any = field(default=None, repr=False)
    _hosts: dict[tuple[str, str], str | None] = field(default_factory=dict, repr=False)

    @property
    def client(self) -> Any:
        """The boto3 client for ``s3://`` references (made on first use)."""
        if self._client is None:
            self._client = make_client(self.endpoint_url)
        return self._client

    # -- checks -----------------------------------------------------------------------
    def check(self, uri: str) -> str:
        """``uri`` if it may be read; raises ReferenceError naming the reason otherwise."""
        entry = self._entry(uri)
        if not uri.startswith("s3://"):
            self._check_address(uri, entry)
        return uri

    def _entry(self, uri: str) -> str:
        """The allow-list entry ``uri`` lies under (its address not looked at yet)."""
        scheme = urlsplit(uri).scheme.lower()
        if scheme not in ("s3", "https", "http"):
            raise ReferenceError(f"{uri!r}: only s3:// and https:// references are read")
        if not self.allow:
            raise ReferencesRefusedError("references are refused: this service allows none "
                                 "(DISTILL_REFERENCE_ALLOW is empty)")
        entry = next((a for a in self.allow if _within(uri, a)), None)
        if entry is None:
            raise ReferenceError(f"{uri!r} is not under an allowed source "
                                 f"(DISTILL_REFERENCE_ALLOW: {', '.join(self.allow)})")
        if scheme == "s3":
            bucket, key = parse_s3_uri(uri)
            if not bucket or ".." in key.split("/"):
                raise ReferenceError(f"{uri!r} is not a valid s3:// URI")
        return entry

    def _check_address(self, url: str, entry: str) -> None:
        # One lookup per host and entry in a request of many URLs on a few hosts.
        where = (urlsplit(url).netloc.lower(), entry)
        if where not in self._hosts:
            try:
                self._resolve(url, entry)
                self._hosts[where] = None
            except ReferenceError as exc:
                self._hosts[where] = str(exc).split(": ", 1)[-1]
        if (reason := self._hosts[where]) is not None:
            raise ReferenceError(f"{url!r}: {reason}")

    def _resolve(self, url: str, entry: str) -> str:
        """Resolves the URL's host and checks every address; returns the first of them."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host or parts.username or parts.password:
            raise ReferenceError(f"{url!r} is not a valid URL (no host, or credentials in it)")
        try:
            addresses = resolve(host, parts.port or 443)
        except (OSError, UnicodeError) as exc:
            raise ReferenceError(f"{url!r}: host {host!r} does not resolve ({exc})") from exc
        if not addresses:
            raise ReferenceError(f"{url!r}: host {host!r} does not resolve")
        named = urlsplit(entry).hostname
        for address in addresses:
            if _internal(address) and named != str(address):
                raise ReferenceError(
                    f"{url!r}: host {host!r} resolves to the internal address {address}; "
                    "internal addresses are read only when DISTILL_REFERENCE_ALLOW names "
                    "the address itself")
        return str(addresses[0])

    def check_source(self, uri: str) -> None:
        """Checks a source prefix and that it can be listed (a missing bucket, a denied
        listing: ReferenceError naming it)."""
        self.check(uri)
        if not uri.startswith("s3://"):
            raise ReferenceError(f"source {uri!r}: only s3:// prefixes can be listed; send "
                                 "URLs as an images list")
        bucket, prefix = parse_s3_uri(uri)
        try:
            call(lambda: self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1),
                 retry_s=2, what=f"listing {uri}")
        except ClientError as exc:
            raise ReferenceError(_s3_problem(uri, exc)) from exc

    # -- listing ----------------------------------------------------------------------
    def list_source(self, uri: str, *, recursive: bool, start_after: str | None = None
                    ) -> Iterator[ListedObject]:
        """The objects under an ``s3://`` prefix in key order, a page at a time (after the
        key ``start_after``, to resume); with ``recursive`` False, only the top level."""
        bucket, prefix = parse_s3_uri(uri)
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
        if not recursive:
            args["Delimiter"] = "/"
        if start_after:
            args["StartAfter"] = start_after
        while True:
            try:
                page = call(lambda a=dict(args): self.client.list_objects_v2(**a),  # type: ignore[misc]
                            retry_s=60, what=f"listing {uri}")
            except ClientError as exc:
                raise ReferenceError(_s3_problem(uri, exc)) from exc
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                if key.endswith("/"):
                    continue  # a folder marker
                yield ListedObject(f"s3://{bucket}/{key}", key[len(prefix):].lstrip("/"),
                                   str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0)))
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]
            args.pop("StartAfter", None)

    # -- reading ----------------------------------------------------------------------
    def fetch(self, uri: str, target: Path) -> None:
        """Copies the referenced image into ``target``; ReferenceError (a per-image error)
        when it is refused, missing, too large or unreadable."""
        if uri.startswith("s3://"):
            self.check(uri)
            self._fetch_s3(uri, target)
        else:
            self._entry(uri)  # allowed at all; its address is checked as it is connected to
            self._fetch_url(uri, target)

    def _fetch_s3(self, uri: str, target: Path) -> None:
        bucket, key = parse_s3_uri(uri)
        try:
            obj = call(lambda: self.client.get_object(Bucket=bucket, Key=key), retry_s=30,
                       what=f"reading {uri}")
        except ClientError as exc:
            raise ReferenceError(_s3_problem(uri, exc)) from exc
        self._check_size(uri, int(obj.get("ContentLength") or 0))
        self._write(uri, obj["Body"].iter_chunks(1 << 20), target)

    def _fetch_url(self, url: str, target: Path) -> None:
        with httpx.Client(timeout=_TIMEOUT, follow_redirects=False, trust_env=False,
                          verify=self.verify) as http:
            for _ in range(MAX_REDIRECTS + 1):
                # Resolved afresh (not the API's cached check) and connected to as checked:
                # no second lookup that a rebinding name could answer otherwise.
                address = self._resolve(url, self._entry(url))
                parts = urlsplit(url)
                with http.stream("GET", _at(url, address), headers={"Host": parts.netloc},
                                 extensions={"sni_hostname": parts.hostname or ""}) as resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("location", ""))
                        continue  # the next hop is checked like the first
                    if resp.status_code != 200:
                        raise ReferenceError(f"{url!r} answered HTTP {resp.status_code}")
                    self._check_size(url, int(resp.headers.get("content-length") or 0))
                    self._write(url, resp.iter_bytes(1 << 20), target)
                    return
        raise ReferenceError(f"{url!r}: more than {MAX_REDIRECTS} redirects")

    def _check_size(self, uri: str, size: int) -> None:
        if size > self.max_bytes:
            raise ReferenceError(f"{uri!r} is {size} bytes, more than the limit of "
                                 f"{self.max_bytes} (DISTILL_MAX_FILE_BYTES)")

    def _write(self, uri: str, chunks: Iterator[bytes], target: Path) -> None:
        got = 0
        with atomic_writer(target) as fh:
            for chunk in chunks:
                got += len(chunk)
                self._check_size(uri, got)  # a server may send more than it announced
                fh.write(chunk)

    def presign(self, uri: str, expires_s: int) -> str:
        """A URL a browser can open: presigned for ``s3://``, the URL itself otherwise."""
        if not uri.startswith("s3://"):
            return uri
        bucket, key = parse_s3_uri(uri)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s))
        return url


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a host name resolves to (an address stands for itself)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _at(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (the port and path kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))


def _within(uri: str, entry: str) -> bool:
    """Whether ``uri`` lies under the allow-list entry (same scheme, host and port; the
    path under the entry's path), compared by parts so that ``https://a.com.evil/``
    never matches ``https://a.com``."""
    u, e = urlsplit(uri), urlsplit(entry)
    if u.scheme.lower() != e.scheme.lower() or (u.netloc.lower() != e.netloc.lower()):
        return False
    base = e.path if e.path.endswith("/") else e.path + "/"
    return e.path in ("", "/") or u.path == e.path or u.path.startswith(base)


def _internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return (address.is_private or address.is_loopback or address.is_link_local
            or address.is_reserved or address.is_multicast or address.is_unspecified)


def _s3_problem(uri: str, exc: ClientError) -> str:
    code = error_code(exc)
    if code == "NoSuchBucket":
        return f"{uri!r}: the bucket does not exist"
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId"):
        return f"{uri!r}: access denied ({code}) for this service's credentials"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"{uri!r}: no such object"
    return f"{uri!r}: {code or exc}"

"""DNS rebinding: a URL's host answers a public address when it is checked and an
internal one afterwards; the worker must read from the address it checked.

Only loopback traffic. In this test's world 127.0.0.1 is "the internet" and
127.0.0.2 "the internal network" (``_internal`` is narrowed to say so), and a
stub stands in for the system resolver (``socket.getaddrinfo``, which both our
check and an HTTP client's own connection would use): ``rebind.test`` answers
127.0.0.1 once, then 127.0.0.2. A server on each address, on the same port:
the public one serves an image, the internal one a secret that must never be
asked for. Over https, the certificate must still be checked against the host's
name (sent as the TLS server name), though the connection goes to an address.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import references
from jobs.references import ReferenceError, References


class _Host:
    """An HTTP server on one loopback address that records the requests it gets."""

    def __init__(self, address: str, port: int, body: bytes,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append((self.path, self.headers.get("Host", "")))
                if self.path.startswith("/to/"):  # a redirect to another of the host's paths
                    self.send_response(302)
                    self.send_header("Location", "/" + self.path[len("/to/"):])
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def hosts(unlabeled_images: list[Path]) -> Iterator[tuple[_Host, _Host]]:
    public = _Host("127.0.0.1", 0, unlabeled_images[0].read_bytes())
    try:
        internal = _Host("127.0.0.2", public.port, b"the internal secret")
    except OSError:
        public.httpd.shutdown()
        pytest.skip("127.0.0.2 cannot be bound here")
    yield public, internal
    for host in (public, internal):
        host.httpd.shutdown()
        host.httpd.server_close()


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebind.test`` resolves to 127.0.0.1 at the first lookup, then to 127.0.0.2; the
    answers given are recorded. Other names and addresses resolve as usual."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "127.0.0.2")
        return real(answers[-1], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(references, "_internal",
                        lambda a: a != ipaddress.ip_address("127.0.0.1"))
    return answers


def test_the_fetch_connects_to_the_address_it_checked(
        hosts: tuple[_Host, _Host], rebinding: list[str], tmp_path: Path,
        unlabeled_images: list[Path]) -> None:
    public, internal = hosts
    base = f"http://rebind.test:{public.port}"
    refs = References([f"{base}/"], max_bytes=10_000_000)
    refs.fetch(f"{base}/img.png", tmp_path / "img")
    assert (tmp_path / "img").read_bytes() == unlabeled_images[0].read_bytes()
    assert rebinding == ["127.0.0.1"]  # one lookup: the one that was checked
    assert public.requests == [("/img.png", f"rebind.test:{public.port}")]  # the real Host
    assert internal.requests == []


def test_every_hop_is_looked_up_once_and_checked(
        hosts: tuple[_Host, _Host], rebinding: list[str], tmp_path: Path) -> None:
    public, internal = hosts
    base = f"http://rebind.test:{public.port}"
    refs = References([f"{base}/"], max_bytes=10_000_000)
    # The redirect's hop resolves anew, to the internal address now: refused, not read.
    with pytest.raises(ReferenceError, match=r"internal address 127\.0\.0\.2"):
        refs.fetch(f"{base}/to/img.png", tmp_path / "hop")
    assert rebinding == ["127.0.0.1", "127.0.0.2"]
    assert [path for path, _ in public.requests] == ["/to/img.png"]
    assert internal.requests == [] and not (tmp_path / "hop").exists()


def _certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for the DNS name ``name`` signed by it:
    (CA certificate, server certificate, server key), as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebinding test CA")])

    def build(subject: Any, public: Any) -> Any:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(hours=1))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), False))
    ca = (build(ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                       False), True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                  key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_over_https_the_certificate_is_checked_against_the_name(
        rebinding: list[str], tmp_path: Path, unlabeled_images: list[Path]) -> None:
    ca, cert, key = _certificates(tmp_path, "rebind.test")
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda sock, name, context: server_names.append(name)
    public = _Host("127.0.0.1", 0, unlabeled_images[0].read_bytes(), tls=tls)
    try:
        base = f"https://rebind.test:{public.port}"
        refs = References([f"{base}/"], max_bytes=10_000_000,
                          verify=ssl.create_default_context(cafile=str(ca)))
        # The certificate names rebind.test, not 127.0.0.1: it verifies only because the
        # name is what the connection to the address checks it against.
        refs.fetch(f"{base}/img.png", tmp_path / "img")
        assert (tmp_path / "img").read_bytes() == unlabeled_images[0].read_bytes()
        assert rebinding == ["127.0.0.1"] and server_names == ["rebind.test"]
        assert public.requests == [("/img.png", f"rebind.test:{public.port}")]
        # A client that trusts no such CA refuses the server: the check is real.
        rebinding.clear()  # the name answers the public address again
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            References([f"{base}/"]).fetch(f"{base}/img.png", tmp_path / "untrusted")
        assert not (tmp_path / "untrusted").exists()
    finally:
        public.httpd.shutdown()
        public.httpd.server_close()

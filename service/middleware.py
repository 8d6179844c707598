"""ASGI middleware: refusing oversized bodies early, and an honest ``Allow`` header.

Both are plain ASGI classes (no ``BaseHTTPMiddleware``), so uploads stream
through untouched.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ContentLengthLimit:
    """Refuses a request whose declared body exceeds the limit before reading any of it.

    A body without Content-Length (chunked) is cut off by the route's own
    ``max_body_size`` while it streams; this only gives the common case a
    message that names the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                body = json.dumps({"detail": {
                    "message": f"request body is {int(declared)} bytes, more than the limit of "
                               f"{self.limit}; send fewer or smaller images per request"}})
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


class AllowHeader:
    """On a 405, lists every method the path supports in ``Allow``.

    Starlette answers a wrong method with the methods of the first route whose
    path matched, so ``/jobs/{id}`` (GET and DELETE, two routes) would claim
    ``Allow: GET`` only; the OpenAPI document knows both.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def fix(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = self._methods(scope)
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers", [])
                               if k.lower() != b"allow"]
                    headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, fix)

    @staticmethod
    def _methods(scope: Scope) -> set[str]:
        """The methods the OpenAPI document lists for this path (the contract clients read)."""
        app = scope.get("app")
        openapi = getattr(app, "openapi", None)
        if openapi is None:
            return set()
        methods: set[str] = set()
        for template, operations in openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, scope["path"]):
                methods |= {m.upper() for m in operations}
        return methods

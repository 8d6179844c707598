"""The review page's static files, served at ``/ui`` from inside the package (no CDN, no
build step, nothing fetched at run time), under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent / "ui"
# Scripts and styles only from this origin; images also from blob: URLs (authenticated
# image fetches are shown as blobs). Even a name that slipped into HTML could not run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class _UiFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_ui(app: FastAPI) -> None:
    """Serves the page at ``/ui/`` and sends ``/`` there."""
    app.mount("/ui", _UiFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/ui/")

"""The app factory: ``create_app(settings)`` builds the whole API, with no import-time state.

Run it with ``distill serve``, or ``uvicorn --factory service.app:app_factory``
(settings from the environment).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

import distill
from distill.errors import DistillError
from jobs.connection import connect
from jobs.recovery import requeue_lost_jobs
from jobs.settings import Settings, get_settings, teacher_paths
from jobs.store import JobStore
from jobs.teachers import TeacherRegistry
from service.auth import check_auth_settings
from service.routers import annotate, datasets, health, jobs, teachers

log = logging.getLogger(__name__)

# Starlette's own cap on files per multipart request; ours (max_files) is checked
# afterwards so that the client gets a message naming the limit.
_PARSER_MAX_FILES = 1000

DESCRIPTION = """Pseudo-labels for unlabeled images by data distillation (Radosavovic et al.,
CVPR 2018). Upload batches with `POST /annotate`, poll `GET /jobs/{id}`, download COCO JSON
from `GET /jobs/{id}/annotations` or, for batches grouped under one `dataset`,
`GET /datasets/{name}/annotations` (calibrated over all of them). Every endpoint but the
health checks needs `Authorization: Bearer <key>`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the API for ``settings`` (default: from the environment).

    Raises ConfigError when no API key is configured and ``allow_open`` is not set.
    """
    settings = settings or get_settings()
    check_auth_settings(settings)
    registry = TeacherRegistry(lambda: teacher_paths(settings))
    if not registry.names():
        log.warning("no teacher registered (DISTILL_TEACHERS / DISTILL_TEACHER): every "
                    "upload will be refused until one is")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = JobStore(settings.data_dir)
        app.state.redis = connect(settings)
        app.state.registry = registry
        try:
            requeue_lost_jobs(app.state.store, app.state.redis.redis, settings, registry)
        except RedisError as exc:
            log.warning("could not check for lost jobs (Redis unreachable: %s)", exc)
        yield
        app.state.redis.close()

    app = FastAPI(title="distill pseudo-label service", version=distill.__version__,
                  description=DESCRIPTION, lifespan=lifespan)
    # Every dependency that asks for get_settings gets these settings.
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_middleware(ContentLengthLimit, limit=settings.max_request_bytes)
    app.include_router(annotate.router, max_body_size=settings.max_request_bytes,
                       form_limits={"max_files": max(_PARSER_MAX_FILES, settings.max_files + 1)})
    for router in (jobs.router, datasets.router, teachers.router, health.router):
        app.include_router(router)

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"the queue (Redis) is unreachable: {exc}"},
                            status_code=503)

    @app.exception_handler(DistillError)
    async def _bad_value(request: Request, exc: DistillError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory service.app:app_factory``: settings from the environment."""
    return create_app(get_settings())


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

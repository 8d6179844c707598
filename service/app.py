"""The app factory: ``create_app(settings)`` builds the whole API, with no import-time state.

Run it with ``distill serve``, or ``uvicorn --factory service.app:app_factory``
(settings from the environment).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.exceptions import RedisError

import distill
from jobs import settings as jobs_settings
from jobs.connection import connect
from jobs.maintenance import run_maintenance
from jobs.settings import Settings, get_settings, open_store, teacher_paths
from jobs.teachers import TeacherRegistry
from service import metrics
from service.auth import check_auth_settings
from service.errors import install_error_handlers
from service.integrations.labelstudio.deliveries import keep_resuming, release_claims
from service.integrations.labelstudio.results import Backend
from service.middleware import AllowHeader, ContentLengthLimit
from service.openapi import multipart_without_nulls
from service.routers import (
    annotate,
    datasets,
    health,
    jobs,
    labelstudio,
    references,
    review,
    teachers,
)
from service.static import mount_ui

log = logging.getLogger(__name__)

# Starlette's own cap on files per multipart request; ours (max_files) is checked
# afterwards so that the client gets a message naming the limit.
_PARSER_MAX_FILES = 1000
API_STORAGE_RETRY_S = 2.0

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
        # A request waits briefly for a bucket that does not answer, then gets a 503.
        app.state.store = open_store(settings, retry_s=min(settings.storage_retry_s,
                                                           API_STORAGE_RETRY_S))
        if added := app.state.store.reindex():
            log.info("indexed %d jobs written before the listing index existed", added)
        app.state.redis = connect(settings)
        app.state.registry = registry
        app.state.references = jobs_settings.references(settings)
        try:
            run_maintenance(app.state.store, app.state.redis.redis, settings, registry.resolve)
        except RedisError as exc:
            log.warning("could not check for lost jobs (Redis unreachable: %s)", exc)

        def ls_backend() -> Backend | None:  # deliveries need a key to write with
            ls = labelstudio.studio_of(app.state, settings)
            return Backend(app.state.store, app.state.redis.redis, settings, registry,
                           ls) if ls.writable else None
        stop = threading.Event()
        threading.Thread(target=keep_resuming, args=(ls_backend, stop), daemon=True,
                         name="ls-deliveries").start()
        yield
        stop.set()
        release_claims(app.state.redis.redis, settings.queue)
        app.state.redis.close()

    app = FastAPI(title="distill pseudo-label service", version=distill.__version__,
                  description=DESCRIPTION, lifespan=lifespan)
    # Every dependency that asks for get_settings gets these settings.
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_middleware(ContentLengthLimit, limit=settings.max_request_bytes)
    app.add_middleware(AllowHeader)
    # JSON bodies (references) first: the upload route takes every other POST /annotate.
    app.include_router(references.router)
    app.include_router(annotate.router, max_body_size=settings.max_request_bytes,
                       form_limits={"max_files": max(_PARSER_MAX_FILES, settings.max_files + 1)})
    for router in (jobs.router, datasets.router, review.router, teachers.router, health.router,
                   labelstudio.router, references.plans):
        app.include_router(router)
    app.include_router(metrics.router)  # GET /metrics, no key, not in the schema

    install_error_handlers(app)
    mount_ui(app)
    app.openapi = lambda: multipart_without_nulls(  # type: ignore[method-assign]
        app, {"/annotate": references.OPENAPI_JSON_BODY})
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory service.app:app_factory``: settings from the environment."""
    return create_app(get_settings())

"""One error model for every endpoint: ``{"detail": {"message": "...", ...}}``.

Every 4xx/5xx body has that shape, whatever raised it: a route's
:func:`problem`, FastAPI's own request validation, an unreachable Redis or a
bad option from the core. Routes declare the codes they can answer with
:func:`responses`, so the OpenAPI document lists each with its schema and
generated clients can rely on it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.errors import DistillError
from jobs.storage import StorageUnavailableError
from jobs.store import DamagedRecordError

_MEANING = {
    400: "the request body is not well-formed (for example broken multipart data)",
    401: "missing or invalid API key",
    404: "no such resource (for this key)",
    409: "the resource is not in a state that allows this (the body says which)",
    413: "a file or the request is larger than allowed",
    422: "a value is missing or invalid (the body names it)",
    429: "too many images queued for this key; retry after the Retry-After seconds",
    503: "the queue (Redis) or the storage (bucket) is unreachable; retry later",
}


class ErrorDetail(BaseModel):
    """What went wrong; some errors add fields (``files``, ``errors``, ``status``...)."""

    model_config = ConfigDict(extra="allow")
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: ErrorDetail


def problem(code: int, message: str, headers: dict[str, str] | None = None,
            **extra: Any) -> HTTPException:
    """An HTTP error with the project's body: ``{"detail": {"message", **extra}}``."""
    return HTTPException(code, {"message": message, **extra}, headers=headers)


def responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each with the error schema.

    ``described`` overrides a code's description (keyword ``c404="..."``).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = described.get(f"c{code}", _MEANING[code])
        out[code] = {"model": ErrorBody, "description": text}
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Makes every error, whoever raised it, answer with :class:`ErrorBody`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) and "message" in exc.detail \
            else {"message": str(exc.detail)}
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc, msg and type only: the offending input may be a whole uploaded file.
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid request: {where}: {first.get('msg', 'invalid value')}"
        return JSONResponse({"detail": {"message": message, "errors": errors}},
                            status_code=422)

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": {"message": f"the queue (Redis) is unreachable: {exc}"}},
                            status_code=503)

    @app.exception_handler(StorageUnavailableError)
    async def _storage_down(request: Request, exc: StorageUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(exc)}}, status_code=503,
                            headers={"Retry-After": "10"})

    @app.exception_handler(DamagedRecordError)
    async def _damaged(request: Request, exc: DamagedRecordError) -> JSONResponse:
        # The stored record, not the request, is at fault; nothing the client sends fixes it.
        return JSONResponse({"detail": {"message": f"a stored record is damaged: {exc}"}},
                            status_code=409)

    @app.exception_handler(DistillError)
    async def _bad_value(request: Request, exc: DistillError) -> JSONResponse:
        return JSONResponse({"detail": {"message": str(exc)}}, status_code=422)

"""GET /healthz (the process answers) and GET /readyz (it can get work done)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from jobs import queueing
from service.deps import RedisDep, RegistryDep, SettingsDep
from service.models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """Always ok while the process serves requests."""
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={503: {"model": Readiness, "description": "not ready (see problems)"}})
def readyz(settings: SettingsDep, redis: RedisDep, registry: RegistryDep) -> JSONResponse:
    """Ready when Redis answers and every registered teacher has a live worker."""
    problems: list[str] = []
    workers = 0
    names = registry.names()
    if not names:
        problems.append("no teacher registered (DISTILL_TEACHERS or DISTILL_TEACHER)")
    try:
        redis.ping()
        ok = True
        for name in names:
            live = len(queueing.live_workers(redis, queueing.queue_name(settings.queue, name)))
            workers += live
            if live == 0:
                problems.append(f"no live worker serves teacher {name!r}")
    except RedisError as exc:
        ok = False
        problems.append(f"Redis unreachable: {exc}")
    body = Readiness(ready=not problems, redis=ok, workers=workers, problems=problems)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

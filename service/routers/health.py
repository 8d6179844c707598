"""GET /healthz (the process answers) and GET /readyz (it can get work done)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.deps import RedisDep, SettingsDep
from service.models import Health, Readiness
from worker import queueing

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    """Always ok while the process serves requests."""
    return Health()


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            responses={503: {"model": Readiness, "description": "not ready (see problems)"}})
def readyz(settings: SettingsDep, redis: RedisDep) -> JSONResponse:
    """Ready when Redis answers and at least one worker's heartbeat is current."""
    problems: list[str] = []
    workers = 0
    try:
        redis.ping()
        ok = True
        workers = len(queueing.live_workers(redis, settings.queue))
        if workers == 0:
            problems.append(f"no live worker on queue {settings.queue!r}")
    except RedisError as exc:
        ok = False
        problems.append(f"Redis unreachable: {exc}")
    body = Readiness(ready=not problems, redis=ok, workers=workers, problems=problems)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

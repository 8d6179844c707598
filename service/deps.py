"""FastAPI dependencies, as ``Annotated`` aliases the routers declare parameters with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis

from jobs.records import JobRecord
from jobs.references import References
from jobs.settings import Settings, get_settings
from jobs.store import JOB_ID_RE, JobStore
from jobs.teachers import TeacherRegistry
from service.auth import authenticate

_bearer = HTTPBearer(auto_error=False, description="an API key from DISTILL_API_KEYS")

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_store(request: Request) -> JobStore:
    """The artifact store opened by the app's lifespan."""
    store: JobStore = request.app.state.store
    return store


def get_redis(request: Request) -> Redis:
    """The Redis connection opened by the app's lifespan."""
    redis: Redis = request.app.state.redis.redis
    return redis


def get_registry(request: Request) -> TeacherRegistry:
    """The registered teachers, built from the settings when the app was created."""
    registry: TeacherRegistry = request.app.state.registry
    return registry


def get_references(request: Request) -> References:
    """How the API checks referenced images (one boto3 client for the app's life)."""
    refs: References = request.app.state.references
    return refs


StoreDep = Annotated[JobStore, Depends(get_store)]
ReferencesDep = Annotated[References, Depends(get_references)]
RedisDep = Annotated[Redis, Depends(get_redis)]
RegistryDep = Annotated[TeacherRegistry, Depends(get_registry)]


def get_owner(request: Request, settings: SettingsDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
              ) -> str:
    """The caller's owner id (hash of its API key); 401 without a valid key."""
    return authenticate(settings, credentials, request.headers.get("authorization"))


OwnerDep = Annotated[str, Depends(get_owner)]


def get_job(job_id: Annotated[str, Path(description="job id (32 hex digits)")],
            owner: OwnerDep, store: StoreDep) -> JobRecord:
    """The caller's job; 404 for a malformed id, an unknown job or another key's job alike."""
    record = store.load_job(job_id) if JOB_ID_RE.match(job_id) else None
    if record is None or record.owner != owner:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return record


JobDep = Annotated[JobRecord, Depends(get_job)]

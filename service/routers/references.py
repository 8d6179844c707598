"""POST /annotate with a JSON body: images referenced where they are (``s3://`` prefixes or
a list of ``s3://`` / ``https://`` URIs), split into batch jobs of one dataset by a plan
that a worker runs; GET /plans/{id}: how far the split got; DELETE /plans/{id}: cancel it.

The request is checked here (allow-list, internal addresses, the source listable,
the teacher and preset, the key's quota) and stored as a plan in one small write;
the listing itself, however long, runs in a worker (:mod:`jobs.plans`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, model_validator
from redis.exceptions import RedisError
from starlette.routing import Match
from starlette.types import Scope

from distill.errors import ConfigError
from distill.options import Fusion
from jobs import queueing
from jobs.ledger import pending_images
from jobs.plan_records import PlanRecord, PlanState, cancel_plan, load_plan, save_plan
from jobs.records import JobRequest, new_job_id, utcnow
from jobs.references import ReferenceError, ReferencesRefusedError
from jobs.settings import DATASET_PATTERN, TEACHER_NAME_PATTERN, job_timeout
from jobs.submit import plan_passes
from service.deps import (
    OwnerDep,
    RedisDep,
    ReferencesDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from service.errors import problem, responses
from service.models import Progress
from service.routers.annotate import RETRY_AFTER_S
from service.views import tally


class JsonRoute(APIRoute):
    """A route that only takes JSON bodies, so that POST /annotate with a multipart body
    still reaches the upload route registered after it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match == Match.FULL and scope.get("type") == "http":
            content = dict(scope.get("headers") or []).get(b"content-type", b"")
            if not content.lower().startswith(b"application/json"):
                return Match.NONE, {}
        return match, child


router = APIRouter(tags=["annotate"], route_class=JsonRoute)
plans = APIRouter(tags=["annotate"])


class ReferenceRequest(BaseModel):
    """Images where they are: a ``source`` prefix (``s3://bucket/prefix/``, listed by a
    worker; ``recursive`` for sub-folders) or an ``images`` list of URIs; the other fields
    as in the upload form."""

    source: str | None = Field(default=None, max_length=2048)
    recursive: bool = False
    images: list[Annotated[str, Field(max_length=2048)]] | None = Field(
        default=None, min_length=1, max_length=100_000)
    teacher: str | None = Field(default=None, pattern=TEACHER_NAME_PATTERN)
    tta: str | None = Field(default=None, max_length=200)
    fusion: Fusion | None = None
    dataset: str | None = Field(default=None, pattern=DATASET_PATTERN)
    score_threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    keypoint_threshold: float | None = Field(default=None, allow_inf_nan=False)
    min_votes: int = Field(default=0, ge=0, le=100)
    ignore_factor: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_kind(self) -> ReferenceRequest:
        if (self.source is None) == (self.images is None):
            raise ValueError("give either source (an s3:// prefix) or images (a list of "
                             "URIs), not both and not neither")
        if 0 < self.ignore_factor < 1:
            raise ValueError("ignore_factor: use 0 (no ignore regions) or a factor >= 1")
        return self


class PlanLinks(BaseModel):
    """Where to follow the plan and download the dataset."""

    status: str
    jobs: str
    annotations: str


class PlanBatches(BaseModel):
    """The plan's batch jobs made so far: counted by status, and their images."""

    statuses: dict[str, int]
    images: Progress


class PlanOut(BaseModel):
    """A plan: the by-reference request and how far its split into batch jobs got."""

    id: str
    dataset: str
    teacher: str
    source: str | None
    images_requested: int | None
    state: PlanState
    batches: PlanBatches | None = Field(
        default=None, description="GET /plans/{id}?batches=true: its batch jobs so far, by "
                                  "status, and their images annotated, failed and sent")
    links: PlanLinks


# POST /annotate's JSON body, its answer and the error only it answers with, for the
# OpenAPI document: this route is left out of it (service.openapi adds them to the form's).
OPENAPI_JSON_BODY = (ReferenceRequest, PlanOut, {
    "403": "references are refused: this service allows none (DISTILL_REFERENCE_ALLOW)"})


@router.post("/annotate", status_code=status.HTTP_202_ACCEPTED, response_model=PlanOut,
             include_in_schema=False)
def annotate_references(body: ReferenceRequest, response: Response, owner: OwnerDep,
                        settings: SettingsDep, store: StoreDep, redis: RedisDep,
                        registry: RegistryDep, refs: ReferencesDep) -> PlanOut:
    """Checks the references and queues the plan that splits them into batch jobs."""
    try:
        if body.source is not None:
            refs.check_source(body.source)
        for uri in body.images or []:
            refs.check(uri)
    except ReferencesRefusedError as exc:
        raise problem(403, str(exc)) from exc
    except ReferenceError as exc:
        raise problem(422, str(exc)) from exc
    if body.images is not None and len(body.images) > settings.max_reference_images:
        raise problem(422, f"{len(body.images)} images, more than the limit of "
                           f"{settings.max_reference_images} (DISTILL_MAX_REFERENCE_IMAGES)")
    request = JobRequest(tta=body.tta or settings.tta, fusion=body.fusion or settings.fusion,
                         score_threshold=body.score_threshold,
                         keypoint_threshold=body.keypoint_threshold,
                         min_votes=body.min_votes, ignore_factor=body.ignore_factor)
    try:
        teacher = registry.resolve(body.teacher)
        passes = len(plan_passes(registry, teacher, request.tta, settings))
    except (ConfigError, ValueError) as exc:
        raise problem(422, str(exc)) from exc
    try:
        pending = pending_images(store, redis, settings.queue, owner,
                                 within=settings.max_pending_images - 1)
    except RedisError as exc:
        raise problem(503, f"the queue (Redis) is unreachable, nothing was queued: {exc}"
                      ) from exc
    if pending >= settings.max_pending_images:
        raise problem(429, f"this key has {pending} images queued or running, the limit is "
                           f"{settings.max_pending_images} (DISTILL_MAX_PENDING_IMAGES)",
                      headers={"Retry-After": str(RETRY_AFTER_S)})
    plan_id = new_job_id()
    batch = settings.reference_batch_size
    plan = PlanRecord(
        id=plan_id, owner=owner, dataset=body.dataset or f"refs-{plan_id[:12]}",
        created_at=utcnow(), teacher=teacher, teacher_sha256=registry.get(teacher).sha256,
        request=request, source=body.source, recursive=body.recursive,
        images=body.images or [], batch_size=batch, max_images=settings.max_reference_images,
        job_timeout_s=job_timeout(settings, batch, passes), retries=settings.job_retries)
    save_plan(store, plan)
    try:
        queueing.enqueue_plan(redis, settings.queue, plan_id, timeout_s=3600,
                              retries=settings.job_retries)
    except RedisError as exc:
        raise problem(503, f"the queue (Redis) is unreachable, nothing was queued: {exc}"
                      ) from exc
    response.headers["Location"] = f"/plans/{plan_id}"
    return _view(plan, PlanState())


@plans.get("/plans/{plan_id}", response_model=PlanOut, summary="How far a by-reference "
           "request got in its split into batch jobs", responses=responses(401, 404, 422))
def get_plan(plan_id: Annotated[str, Path(description="plan id (32 hex digits)")],
             owner: OwnerDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
             batches: Annotated[bool, Query(
                 description="also its batch jobs by status and their images (counted "
                             "from Redis; each running batch job is read)")] = False
             ) -> PlanOut:
    """Images listed, batch jobs made, objects skipped (no image suffix) and, once over,
    ``finished`` or ``failed`` with the reason; with ``batches``, the batch jobs by status
    and their images (what ``distill client annotate s3://...`` follows)."""
    loaded = load_plan(store, plan_id)
    if loaded is None or loaded[0].owner != owner:
        raise problem(404, f"no plan {plan_id!r}")
    plan, state = loaded
    if state.status not in ("finished", "failed", "cancelled"):
        rq = queueing.rq_status(redis, f"plan-{plan_id}")
        if rq == "failed":
            state.status = "failed"
            state.error = queueing.rq_failure(redis, f"plan-{plan_id}") or "failed in the queue"
    return _view(plan, state, _batches(store, redis, settings.queue, plan) if batches else None)


@plans.delete("/plans/{plan_id}", response_model=PlanOut, status_code=status.HTTP_202_ACCEPTED,
              summary="Cancel a by-reference request and the batch jobs it made",
              responses=responses(401, 404, 422, 503))
def delete_plan(plan_id: Annotated[str, Path(description="plan id (32 hex digits)")],
                owner: OwnerDep, store: StoreDep, redis: RedisDep, settings: SettingsDep
                ) -> PlanOut:
    """The plan stops listing (within about a second) and every batch job it made that is
    not over is cancelled, as ``DELETE /jobs/{id}`` cancels one; batches that finished stay.
    A worker does it: the plan's status becomes ``cancelled`` once it is done."""
    loaded = load_plan(store, plan_id)
    if loaded is None or loaded[0].owner != owner:
        raise problem(404, f"no plan {plan_id!r}")
    plan, state = loaded
    cancel_plan(store, plan_id)  # the running plan looks for it each time it saves its state
    try:
        queueing.cancel(redis, f"plan-{plan_id}")  # a plan not started never lists
        # A plan that is not running (queued, over, its worker gone) is swept by this run.
        queueing.enqueue_plan(redis, settings.queue, plan_id, timeout_s=3600,
                              retries=settings.job_retries, cancel=True)
    except RedisError as exc:
        raise problem(503, f"the queue (Redis) is unreachable: {exc}; the plan is marked "
                           "cancelled and stops when a worker runs it") from exc
    return _view(plan, state)


def _batches(store: StoreDep, redis: RedisDep, queue: str, plan: PlanRecord) -> PlanBatches:
    """The plan's batch jobs in its dataset, counted (:func:`service.views.tally`)."""
    counted = tally(store, redis, queue, plan.owner, plan.dataset, plan=plan.id)
    if counted is None:
        return PlanBatches(statuses={}, images=Progress())
    return PlanBatches(statuses=counted.statuses, images=counted.images)


def _view(plan: PlanRecord, state: PlanState, batches: PlanBatches | None = None) -> PlanOut:
    data: dict[str, Any] = {"status": f"/plans/{plan.id}",
                            "jobs": f"/jobs?dataset={plan.dataset}",
                            "annotations": f"/datasets/{plan.dataset}/annotations"}
    return PlanOut(id=plan.id, dataset=plan.dataset, teacher=plan.teacher, source=plan.source,
                   images_requested=len(plan.images) if plan.source is None else None,
                   state=state, batches=batches, links=PlanLinks(**data))

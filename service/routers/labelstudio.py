"""The Label Studio ML backend protocol under ``/ls`` (default teacher) and
``/ls/{teacher}``: connect a project to ``http://HOST:8000/ls/TEACHER``.

The shapes are those of Label Studio's reference server (``label_studio_ml/api.py``) and
of its caller (``label_studio/ml/api_connector.py``, ``ml/models.py``): ``GET /health``
and ``/`` (1 s), ``POST /setup`` (3 s: answered from memory), ``POST /predict`` (one
prediction per task, in order, within ``ML_TIMEOUT_PREDICT``), ``POST /webhook`` (every
project event; answered at once), ``GET /versions``. Label Studio authenticates only
with HTTP Basic: any user name, the API key as the password (``Bearer`` works too).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from distill.errors import ConfigError
from jobs.settings import TEACHER_NAME_PATTERN, Settings
from jobs.submit import QueueUnavailableError, QuotaExceededError
from service.auth import authenticate
from service.deps import RedisDep, RegistryDep, SettingsDep, StoreDep
from service.errors import problem, responses
from service.integrations.labelstudio.config import parse_config
from service.integrations.labelstudio.interactive import drawn_boxes
from service.integrations.labelstudio.media import LabelStudio
from service.integrations.labelstudio.predict import predict
from service.integrations.labelstudio.results import Backend, model_version
from service.routers.annotate import RETRY_AFTER_S

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ls", tags=["label studio"])
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                "START_TRAINING")
BASIC = {"WWW-Authenticate": 'Basic realm="distill"'}
TeacherPath = Annotated[str, Path(pattern=TEACHER_NAME_PATTERN,
                                  description="a registered teacher (GET /teachers)")]
JSONBody = Annotated[dict[str, Any], Body()]


def ls_owner(request: Request, settings: SettingsDep) -> str:
    """The caller's owner id from ``Basic`` (password = API key) or ``Bearer``; a 401
    challenges for Basic, the only scheme Label Studio can send."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    key: str | None = value.strip() if scheme.lower() == "bearer" else None
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            key = None
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key) if key else None
    try:
        return authenticate(settings, credentials, header or None)
    except HTTPException as exc:
        raise problem(401, "Label Studio must send an API key of this service: connect the "
                           "model with Basic auth, any user name, the key as the password",
                      headers=BASIC) from exc


LSOwnerDep = Annotated[str, Depends(ls_owner)]


def studio(request: Request, settings: SettingsDep) -> LabelStudio:
    """The app's Label Studio client (made once, from the settings)."""
    return studio_of(request.app.state, settings)


def studio_of(state: Any, settings: Settings) -> LabelStudio:
    """The Label Studio client kept on the app's ``state``, made on first use."""
    if getattr(state, "label_studio", None) is None:
        state.label_studio = LabelStudio(settings.label_studio_url,
                                         settings.label_studio_api_key)
    found: LabelStudio = state.label_studio
    return found


def _teacher(registry: Any, name: str | None) -> str:
    try:
        resolved: str = registry.resolve(name)
        registry.get(resolved).require_card()
    except ConfigError as exc:
        raise problem(404 if name else 422, str(exc)) from exc
    return resolved


# Without a teacher in the path, ``teacher`` is an optional query parameter (an unknown
# one: 404, as in the path). Health and webhook take no key: they stay out of the OpenAPI
# document (like /metrics), whose every route needs one; they are Label Studio's.
@router.get("/", include_in_schema=False)
@router.get("/health", include_in_schema=False)
@router.get("/{teacher}/", include_in_schema=False)
@router.get("/{teacher}/health", include_in_schema=False)
def health(registry: RegistryDep, teacher: TeacherPath | None = None) -> dict[str, Any]:
    """``{"status": "UP", "model_class": ...}``, without a key (Label Studio waits 1 s);
    404 for an unknown teacher. ``teacher`` is null at ``/ls`` with several teachers."""
    name = _teacher(registry, teacher) if teacher or len(registry.names()) == 1 else None
    return {"status": "UP", "model_class": "distill", "teacher": name}


@router.post("/setup", summary="Label Studio: connect a project",
             responses=responses(401, 404, 422))
@router.post("/{teacher}/setup", summary="Label Studio: connect a project (one teacher)",
             responses=responses(401, 404, 422))
def setup(owner: LSOwnerDep, registry: RegistryDep, body: JSONBody,
          teacher: TeacherPath | None = None) -> dict[str, str]:
    """The ``model_version`` (teacher and checkpoint hash); the config is checked."""
    name = _teacher(registry, teacher)
    schema = body.get("schema")
    if isinstance(schema, str) and schema.strip():
        try:
            parse_config(schema)
        except ConfigError as exc:
            raise problem(422, str(exc)) from exc
    return {"model_version": model_version(registry, name)}


@router.post("/predict", summary="Label Studio: predictions for tasks",
             responses=responses(401, 404, 422, 429, 503))
@router.post("/{teacher}/predict", summary="Label Studio: predictions for tasks (one teacher)",
             responses=responses(401, 404, 422, 429, 503))
def predict_tasks(owner: LSOwnerDep, registry: RegistryDep, store: StoreDep, redis: RedisDep,
                  settings: SettingsDep, ls: Annotated[LabelStudio, Depends(studio)],
                  body: JSONBody, teacher: TeacherPath | None = None) -> dict[str, Any]:
    """``{"results": [prediction per task, in order]}``; with ``params.context`` (a box
    drawn with the smart rectangle tool), the drawn boxes with the teacher's keypoints
    (:mod:`service.integrations.labelstudio.interactive`)."""
    name = _teacher(registry, teacher)
    tasks, xml = body.get("tasks"), body.get("label_config")
    if not isinstance(tasks, list) or not tasks:
        raise problem(422, "'tasks' must be a non-empty list of Label Studio tasks")
    if not isinstance(xml, str):
        raise problem(422, "'label_config' (the project's labeling config) is missing")
    if len(tasks) > settings.max_pending_images:
        raise problem(422, f"{len(tasks)} tasks in one request, more than this key may have "
                           f"queued ({settings.max_pending_images}, "
                           "DISTILL_MAX_PENDING_IMAGES): select fewer tasks")
    try:
        config = parse_config(xml)
        try:
            drawn = drawn_boxes(body.get("params"), config)
        except ValueError as exc:
            raise problem(422, str(exc)) from exc
        if drawn is not None and len(tasks) != 1:
            raise problem(422, "an interactive call (params.context) has one task, not "
                               f"{len(tasks)}")
        results = predict(Backend(store, redis, settings, registry, ls), owner, name, config,
                          tasks, xml, drawn)
    except QuotaExceededError as exc:
        raise problem(429, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
    except QueueUnavailableError as exc:
        raise problem(503, str(exc)) from exc
    except ConfigError as exc:
        raise problem(422, str(exc)) from exc
    return {"results": results}


@router.post("/webhook", include_in_schema=False)
@router.post("/{teacher}/webhook", include_in_schema=False)
async def webhook(request: Request, teacher: TeacherPath | None = None) -> JSONResponse:
    """Every event of a connected project arrives here; none needs work now (annotations
    are read from Label Studio when asked for), so each is answered at once: 201 for
    the training events, 200 for the rest. Nothing is trained, so no key is asked."""
    try:
        event = await request.json()
    except ValueError:
        event = None
    action = event.get("action") if isinstance(event, dict) else None
    if action in TRAIN_EVENTS:
        return JSONResponse({"status": "ok", "result": None}, status_code=201)
    return JSONResponse({"status": "Unknown event"}, status_code=200)


@router.get("/versions", summary="Label Studio: model versions",
            responses=responses(401, 404, 422))
@router.get("/{teacher}/versions", summary="Label Studio: model versions (one teacher)",
            responses=responses(401, 404, 422))
def versions(owner: LSOwnerDep, registry: RegistryDep, teacher: TeacherPath | None = None
             ) -> dict[str, list[str]]:
    """The one version served: the teacher's current checkpoint."""
    return {"versions": [model_version(registry, _teacher(registry, teacher))]}

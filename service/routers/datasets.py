"""GET /datasets/{name}/annotations: one COCO file over all finished batches of a dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import JSONResponse

from service.annotations import NotAvailableError, build_coco
from service.deps import OwnerDep, RedisDep, SettingsDep, StoreDep
from service.routers.annotate import DATASET_PATTERN
from service.routers.jobs import KeypointQuery, ScoreQuery
from service.views import job_view

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get(
    "/{name}/annotations", summary="COCO pseudo-labels of a dataset, calibrated over all its jobs",
    response_class=JSONResponse,
    responses={200: {"description": "COCO JSON over every finished job of the dataset"},
               404: {"description": "no job of this dataset (for this key)"},
               409: {"description": "some jobs are still queued or running"}})
def dataset_annotations(
    name: Annotated[str, Path(pattern=DATASET_PATTERN)], owner: OwnerDep, store: StoreDep,
    redis: RedisDep, settings: SettingsDep, score_thresh: ScoreQuery = None,
    keypoint_thresh: KeypointQuery = None,
    partial: Annotated[bool, Query(
        description="serve the finished jobs even while others still run")] = False,
) -> JSONResponse:
    """Thresholds are calibrated over the union of the dataset's finished jobs (the caller's);
    failed and cancelled jobs are left out."""
    records = [r for r in store.list_jobs() if r.owner == owner and r.dataset == name]
    if not records:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no jobs in dataset {name!r}")
    views = {r.id: job_view(store, redis, r, settings.queue) for r in records}
    pending = [i for i, v in views.items() if v.status in ("queued", "running")]
    if pending and not partial:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "message": f"{len(pending)} of {len(records)} jobs of dataset {name!r} are not "
                       "finished; wait, or pass partial=true", "pending": pending})
    finished = [r for r in records if views[r.id].status == "finished"]
    if not finished:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"no finished jobs in dataset {name!r} (all failed or cancelled)")
    try:
        coco = build_coco(store, finished, score_thresh, keypoint_thresh)
    except NotAvailableError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return JSONResponse(coco)

"""GET /jobs, GET /jobs/{id}, GET /jobs/{id}/annotations, DELETE /jobs/{id}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse, JSONResponse, Response

from jobs import queueing
from jobs.store import utcnow
from service.annotations import NotAvailableError, build_coco
from service.deps import JobDep, OwnerDep, RedisDep, SettingsDep, StoreDep
from service.models import Deleted, JobList, JobOut, JobStatus
from service.views import job_view

router = APIRouter(prefix="/jobs", tags=["jobs"])

ScoreQuery = Annotated[float | None, Query(
    ge=0.0, le=1.0, allow_inf_nan=False,
    description="re-select with this detection-score threshold instead of the job's")]
KeypointQuery = Annotated[float | None, Query(
    allow_inf_nan=False,
    description="re-select with this keypoint-score threshold instead of the job's")]


@router.get("", response_model=JobList, summary="List your jobs, newest first")
def list_jobs(owner: OwnerDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
              status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              dataset: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobList:
    """The caller's jobs, optionally filtered by status or dataset."""
    mine = [r for r in store.list_jobs()
            if r.owner == owner and (dataset is None or r.dataset == dataset)]
    views = [job_view(store, redis, r, settings.queue) for r in reversed(mine)]
    return JobList(jobs=[v for v in views if status_ is None or v.status == status_][:limit])


@router.get("/{job_id}", response_model=JobOut, summary="Status and progress of a job",
            responses={404: {"description": "no such job (for this key)"}})
def get_job(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep) -> JobOut:
    """Status, progress (images done / failed / total), timestamps and per-image errors."""
    return job_view(store, redis, record, settings.queue)


@router.get(
    "/{job_id}/annotations", summary="COCO pseudo-labels of a finished job",
    response_class=JSONResponse,
    responses={200: {"description": "COCO JSON (images, annotations, categories, info)"},
               404: {"description": "no such job (for this key)"},
               409: {"description": "the job has not finished (the body gives its status)"}})
def get_annotations(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
                    score_thresh: ScoreQuery = None,
                    keypoint_thresh: KeypointQuery = None) -> Response:
    """The job's calibrated COCO file; threshold parameters re-select without re-running."""
    view = job_view(store, redis, record, settings.queue)
    if view.status != "finished":
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "message": f"job {record.id} is {view.status}; annotations exist once it has "
                       "finished", "status": view.status,
            "progress": view.progress.model_dump()})
    path = store.annotations_path(record.id)
    if score_thresh is None and keypoint_thresh is None and path.exists():
        return FileResponse(path, media_type="application/json")
    # Other thresholds (or a lost output file): rebuilt from the stored raw predictions.
    try:
        coco: dict[str, Any] = build_coco(store, [record], score_thresh, keypoint_thresh)
    except NotAvailableError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return JSONResponse(coco)


@router.delete("/{job_id}", response_model=Deleted, summary="Cancel and/or delete a job",
               responses={404: {"description": "no such job (for this key)"}})
def delete_job(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep
               ) -> Deleted:
    """A queued or running job is cancelled: taken off the queue (or stopped by its worker
    after the batch in flight) and its images and outputs deleted; its record stays, with
    status ``cancelled``. A finished, failed or cancelled job is deleted entirely."""
    view = job_view(store, redis, record, settings.queue)
    if view.status in ("queued", "running"):
        record.cancelled_at = utcnow()
        store.save_job(record)  # the worker checks this between batches
        queueing.cancel(redis, record.id)
        store.delete_artifacts(record.id)
        return Deleted(id=record.id, previous_status=view.status, status="cancelled")
    store.delete_job(record.id)
    return Deleted(id=record.id, previous_status=view.status, status="deleted")

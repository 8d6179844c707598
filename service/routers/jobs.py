"""GET /jobs, GET /jobs/{id}, GET /jobs/{id}/annotations, DELETE /jobs/{id}."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from jobs import tallies
from jobs.cancel import cancel_job
from jobs.datasets import forget_if_empty
from jobs.ledger import remove_job
from jobs.settings import DATASET_PATTERN
from service.annotations import NotAvailableError, build_coco
from service.deps import JobDep, OwnerDep, RedisDep, SettingsDep, StoreDep
from service.downloads import (
    DEFAULT_FORMAT,
    FormatQuery,
    download_headers,
    download_response_doc,
    export_response,
)
from service.errors import problem, responses
from service.models import Deleted, JobList, JobOut, JobStatus
from service.params import RedirectQuery, SelectionQueryDep
from service.stored import send_object
from service.views import job_view

router = APIRouter(prefix="/jobs", tags=["jobs"])

@router.get("", response_model=JobList, summary="List your jobs, newest first",
            responses=responses(401, 422))
def list_jobs(owner: OwnerDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
              status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              dataset: Annotated[str | None, Query(pattern=DATASET_PATTERN)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              cursor: Annotated[str | None, Query(
                  pattern=r"^[0-9T]{21}-[0-9a-f]{32}$",
                  description="next_cursor of the previous page")] = None) -> JobList:
    """The caller's jobs (optionally one status or dataset), a page of at most ``limit``;
    ``next_cursor`` fetches the next page. Only the listed jobs are read, and with a
    status and a dataset not the ones counts remember as ended otherwise
    (:mod:`jobs.tallies`): the failed batches of a large plan are found at once."""
    jobs: list[JobOut] = []
    last: str | None = None
    ended = tallies.recall(redis, settings.queue, owner, dataset) \
        if status_ is not None and dataset is not None else {}

    def other_status(job_id: str) -> bool:
        return job_id in ended and ended[job_id].status != status_

    for entry, record in store.list_owner_jobs(owner, dataset=dataset, after=cursor,
                                               skip=other_status if ended else None):
        view = job_view(store, redis, record, settings.queue)
        last = entry
        if status_ is None or view.status == status_:
            jobs.append(view)
            if len(jobs) == limit:
                break
    full = len(jobs) == limit
    return JobList(jobs=jobs, next_cursor=last if full else None)


@router.get("/{job_id}", response_model=JobOut, summary="Status and progress of a job",
            responses=responses(401, 404, 422))
def get_job(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep) -> JobOut:
    """Status, progress (images done / failed / total), timestamps and per-image errors."""
    return job_view(store, redis, record, settings.queue)


@router.get(
    "/{job_id}/annotations", summary="COCO pseudo-labels of a finished job",
    response_class=JSONResponse,
    responses={200: download_response_doc("The pseudo-labels (images, annotations, "
                                          "categories, info)"),
               **responses(401, 404, 409, 422, c409="the job has not finished (the body "
                                                    "gives its status)")})
def get_annotations(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
                    owner: OwnerDep, query: SelectionQueryDep,
                    format: FormatQuery = DEFAULT_FORMAT, redirect: RedirectQuery = False
                    ) -> Response:
    """The job's COCO file: with the thresholds of the query if given, else with the
    selection saved in review, else as calibrated; ``info.selection_source`` and the
    ``X-Distill-Selection`` header say which (``query``, ``saved``, ``job``)."""
    view = job_view(store, redis, record, settings.queue)
    if view.status != JobStatus.FINISHED:
        raise problem(409, f"job {record.id} is {view.status}; annotations exist once it "
                           "has finished", status=view.status,
                      progress=view.progress.model_dump())
    saved = store.load_selection(owner, job_id=record.id)
    key = store.annotations_key(record.id)
    unchanged = query.empty and saved is None
    if unchanged and format == "coco" and store.storage.exists(key):
        return send_object(store.storage, key, media_type="application/json",
                           headers=download_headers(format, record.id, "job"),
                           filename=f"{record.id}.json",
                           redirect_s=settings.presign_expiry_s if redirect else None)
    stored = store.storage.get(key) if unchanged else None
    if stored is not None:
        return export_response(json.loads(stored), format, record.id)
    # Other thresholds, a saved review (or a lost output file): rebuilt from the raw
    # predictions, without inference.
    try:
        coco: dict[str, Any] = build_coco(store, [record], query, saved)
    except NotAvailableError as exc:
        raise problem(409, str(exc)) from exc
    return export_response(coco, format, record.id)


@router.delete("/{job_id}", response_model=Deleted, summary="Cancel and/or delete a job",
               responses=responses(401, 404, 422))
def delete_job(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep
               ) -> Deleted:
    """A queued or running job is cancelled: taken off the queue (or stopped by its worker
    after the batch in flight) and its images and outputs deleted; its record stays, with
    status ``cancelled``. A finished, failed or cancelled job is deleted entirely."""
    view = job_view(store, redis, record, settings.queue)
    if not view.status.is_terminal:
        cancel_job(store, redis, settings.queue, record)
        return Deleted(id=record.id, previous_status=view.status, status="cancelled")
    remove_job(store, redis, settings.queue, record)
    forget_if_empty(store, record.owner, record.dataset)  # the dataset's file, with its last job
    return Deleted(id=record.id, previous_status=view.status, status="deleted")

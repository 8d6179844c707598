"""GET /datasets: the key's datasets; GET /datasets/{name}: one of them, its jobs and images;
GET /datasets/{name}/annotations: one COCO file over all finished batches of a dataset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from redis import Redis

from jobs.datasets import current_file
from jobs.records import JobStatus
from jobs.store import JobStore
from service.annotations import NotAvailableError, build_coco
from service.deps import OwnerDep, RedisDep, SettingsDep, StoreDep
from service.downloads import (
    DEFAULT_FORMAT,
    FormatQuery,
    download_headers,
    download_response_doc,
    export_response,
)
from service.errors import problem, responses
from service.models import DatasetList, DatasetOut
from service.params import DatasetName, RedirectQuery, SelectionQueryDep
from service.stored import send_object
from service.views import job_view, tally

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=DatasetList, summary="List your datasets",
            responses=responses(401))
def list_datasets(owner: OwnerDep, store: StoreDep, redis: RedisDep, settings: SettingsDep
                  ) -> DatasetList:
    """Every dataset of the caller (however many jobs it has; ``GET /jobs`` pages the
    jobs), with its jobs counted by status."""
    found = (_summary(store, redis, settings.queue, owner, name)
             for name in store.list_owner_datasets(owner))
    return DatasetList(datasets=[d for d in found if d is not None])


@router.get("/{name}", response_model=DatasetOut, summary="A dataset's jobs and images",
            responses=responses(401, 404, 422, c404="no job of this dataset (for this key)"))
def get_dataset(name: DatasetName, owner: OwnerDep, store: StoreDep, redis: RedisDep,
                settings: SettingsDep) -> DatasetOut:
    """Its jobs counted by status and its images annotated, failed and sent: what a client
    following a by-reference request (``GET /plans/{id}``) polls until no job is left."""
    summary = _summary(store, redis, settings.queue, owner, name)
    if summary is None:
        raise problem(404, f"no jobs in dataset {name!r}")
    return summary


def _summary(store: JobStore, redis: Redis, queue: str, owner: str, name: str
             ) -> DatasetOut | None:
    """The dataset's jobs by status and its image counts; None when it has no job."""
    counted = tally(store, redis, queue, owner, name)
    if counted is None:
        return None
    return DatasetOut(name=name, jobs=counted.jobs, statuses=counted.statuses,
                      images=counted.images)


@router.get(
    "/{name}/annotations", summary="COCO pseudo-labels of a dataset, calibrated over all its jobs",
    response_class=JSONResponse,
    responses={200: download_response_doc("The pseudo-labels over every finished job of "
                                          "the dataset"),
               **responses(401, 404, 409, 422, 503, c404="no job of this dataset (for this key)",
                           c409="some jobs are still queued or running, none finished, or "
                                "they ran with different teachers")})
def dataset_annotations(
    name: DatasetName, owner: OwnerDep, store: StoreDep, redis: RedisDep,
    settings: SettingsDep, query: SelectionQueryDep, format: FormatQuery = DEFAULT_FORMAT,
    partial: Annotated[bool, Query(
        description="serve the finished jobs even while others still run")] = False,
    redirect: RedirectQuery = False,
) -> Response:
    """Thresholds are calibrated over the union of the dataset's finished jobs (the caller's),
    unless the query gives thresholds or a review saved a selection (then that applies,
    exclusions included); failed and cancelled jobs are left out. Once every job has
    ended, the file written then is streamed (memory stays flat however large)."""
    saved = store.load_selection(owner, dataset=name)
    if query.empty and saved is None and format == "coco" and \
            (key := current_file(store, owner, name)) is not None:
        return send_object(store.storage, key, media_type="application/json",
                           headers=download_headers(format, name, "job"),
                           filename=f"{name}.json",
                           redirect_s=settings.presign_expiry_s if redirect else None)
    # Oldest first: a name several jobs share is kept from the first job that sent it.
    records = [r for _, r in store.list_owner_jobs(owner, dataset=name)][::-1]
    if not records:
        raise problem(404, f"no jobs in dataset {name!r}")
    views = {r.id: job_view(store, redis, r, settings.queue) for r in records}
    pending = [i for i, v in views.items() if not v.status.is_terminal]
    if pending and not partial:
        raise problem(409, f"{len(pending)} of {len(records)} jobs of dataset {name!r} are not "
                           "finished; wait, or pass partial=true", pending=pending)
    finished = [r for r in records if views[r.id].status == JobStatus.FINISHED]
    if not finished:
        raise problem(409, f"no finished jobs in dataset {name!r} (all failed or cancelled)")
    try:
        coco = build_coco(store, finished, query, saved)
    except NotAvailableError as exc:
        raise problem(409, str(exc)) from exc
    return export_response(coco, format, name)

"""The review API: a job's or dataset's predictions for the page, its images, its selection.

GET  /jobs/{id}/review, /datasets/{name}/review     predictions, thresholds, targets
GET  /jobs/{id}/images/{n}[?thumb=true]              the job's own image bytes (cached)
PUT  /jobs/{id}/selection, /datasets/{name}/selection  thresholds + exclusions to apply
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from jobs.records import JobRecord, JobStatus, SavedSelection, SelectionChoice
from service.annotations import NotAvailableError
from service.deps import JobDep, OwnerDep, RedisDep, ReferencesDep, SettingsDep, StoreDep
from service.errors import problem, responses
from service.params import DatasetName
from service.review import image_key, review_data, thumbnail
from service.stored import send_object
from service.views import job_view

router = APIRouter(tags=["review"])
# The bytes never change, but the browser must ask again each time (with the ETag: a 304
# costs no bytes), so that the server checks the key: a cached image is never shown to
# another key signed in later in the same browser; Vary keeps the cache entries apart.
_CACHE = "private, no-cache"


@router.get("/jobs/{job_id}/review", summary="Everything the review page shows for a job",
            responses=responses(401, 404, 409, 422))
def job_review(record: JobDep, store: StoreDep, redis: RedisDep, settings: SettingsDep,
               owner: OwnerDep) -> JSONResponse:
    """Every raw prediction (not only the kept ones) of the images shown (a job larger
    than ``DISTILL_REVIEW_MAX_IMAGES``: a uniform sample), the calibrated thresholds, the
    labeled targets and kept counts per category, and the saved selection."""
    _require_finished([record], store, redis, settings.queue)
    saved = store.load_selection(owner, job_id=record.id)
    return JSONResponse(_review(store, [record], saved, kind="job", name=record.id,
                                max_images=settings.review_max_images))


@router.get("/datasets/{name}/review", summary="Everything the review page shows for a dataset",
            responses=responses(401, 404, 409, 422))
def dataset_review(name: DatasetName, owner: OwnerDep,
                   store: StoreDep, redis: RedisDep, settings: SettingsDep) -> JSONResponse:
    """The same over a dataset's finished jobs, calibrated together; a dataset of more
    than ``DISTILL_REVIEW_MAX_IMAGES`` images is shown as a uniform sample of that many
    (``sample``), calibrated over all of them; one of more than
    ``DISTILL_REVIEW_MAX_DATASET_IMAGES`` is refused (each load reads every log)."""
    records = [r for _, r in store.list_owner_jobs(owner, dataset=name)][::-1]
    if not records:
        raise problem(404, f"no jobs in dataset {name!r}")
    finished = _require_finished(records, store, redis, settings.queue, some=True)
    images = len({f.name for r in finished for f in r.files})
    if images > settings.review_max_dataset_images:
        raise problem(422, f"dataset {name!r} has {images} images in finished jobs, more than "
                           "a review reads on each load "
                           f"({settings.review_max_dataset_images}, "
                           "DISTILL_REVIEW_MAX_DATASET_IMAGES): download it with the "
                           f"thresholds you want (GET /datasets/{name}/annotations?"
                           "score_threshold=...), or review its jobs one at a time "
                           f"(GET /jobs?dataset={name}; a job's saved selection applies to "
                           "that job's downloads only)",
                      images=images, limit=settings.review_max_dataset_images)
    saved = store.load_selection(owner, dataset=name)
    return JSONResponse(_review(store, finished, saved, kind="dataset", name=name,
                                max_images=settings.review_max_images))


@router.get("/jobs/{job_id}/images/{n}", summary="One of the job's images (or its thumbnail)",
            response_class=Response, responses={
                200: {"content": {"image/*": {}}, "description": "the image bytes"},
                304: {"description": "not modified (If-None-Match)"},
                **responses(401, 404, 422)})
def job_image(record: JobDep, store: StoreDep, request: Request, settings: SettingsDep,
              refs: ReferencesDep,
              n: Annotated[int, Path(ge=0, le=100_000)],
              thumb: Annotated[bool, Query(description="a JPEG of at most 320 px")] = False
              ) -> Response:
    """Only the job's own images, by index; revalidated on every use (ETag), so that the
    key is checked each time. An image referenced in place is a redirect to it
    (presigned for ``s3://``)."""
    source = record.files[n].source if n < len(record.files) else None
    if source is not None:
        url = refs.presign(source, settings.presign_expiry_s)
        return RedirectResponse(url, status_code=307)
    try:
        key = thumbnail(store, record, n) if thumb else image_key(store, record, n)
    except NotAvailableError as exc:
        raise problem(404, str(exc)) from exc
    etag = f'"{record.files[n].sha256 or record.id}-{n}{"-t" if thumb else ""}"'
    headers = {"Cache-Control": _CACHE, "ETag": etag, "Vary": "Authorization"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return send_object(store.storage, key, media_type="image/jpeg" if thumb else None,
                       headers=headers)


@router.put("/jobs/{job_id}/selection", response_model=SavedSelection,
            summary="Save thresholds and exclusions; every download of the job applies them",
            responses=responses(401, 404, 422))
def save_job_selection(record: JobDep, body: SelectionChoice, store: StoreDep,
                       owner: OwnerDep) -> SavedSelection:
    """Replaces the job's saved selection."""
    selection = SavedSelection.model_validate(body.model_dump())
    store.save_selection(owner, selection, job_id=record.id)
    return selection


@router.put("/datasets/{name}/selection", response_model=SavedSelection,
            summary="Save thresholds and exclusions; every download of the dataset applies them",
            responses=responses(401, 404, 422))
def save_dataset_selection(name: DatasetName,
                           body: SelectionChoice, store: StoreDep, owner: OwnerDep
                           ) -> SavedSelection:
    """Replaces the dataset's saved selection."""
    if next(store.list_owner_jobs(owner, dataset=name), None) is None:
        raise problem(404, f"no jobs in dataset {name!r}")
    selection = SavedSelection.model_validate(body.model_dump())
    store.save_selection(owner, selection, dataset=name)
    return selection


def _require_finished(records: list[JobRecord], store: StoreDep, redis: RedisDep, prefix: str,
                      *, some: bool = False) -> list[JobRecord]:
    views = {r.id: job_view(store, redis, r, prefix).status for r in records}
    done = [r for r in records if views[r.id] == JobStatus.FINISHED]
    if (some and not done) or (not some and len(done) < len(records)):
        raise problem(409, "nothing to review yet: the job has not finished" if not some
                      else "no finished job in this dataset yet", statuses=views)
    return done


def _review(store: StoreDep, records: list[JobRecord], saved: SavedSelection | None, *,
            kind: str, name: str, max_images: int) -> dict[str, Any]:
    try:
        return review_data(store, records, saved, kind=kind, name=name, max_images=max_images)
    except NotAvailableError as exc:
        raise problem(409, str(exc)) from exc

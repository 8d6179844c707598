"""POST /annotate: validate an image batch, store it, queue one job."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from redis import Redis
from redis.exceptions import RedisError

from distill.errors import ConfigError
from service.deps import OwnerDep, RedisDep, SettingsDep, StoreDep
from service.models import AcceptedFile, JobAccepted
from service.uploads import RejectedError, probe_image, safe_name, unique_names
from service.views import links
from worker import queueing
from worker.settings import Settings, job_timeout
from worker.store import JobRecord, JobRequest, StoredFile, atomic_write, new_job_id, utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["annotate"])

DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _problem(code: int, message: str, files: list[dict[str, str]] | None = None) -> HTTPException:
    detail: dict[str, Any] = {"message": message}
    if files is not None:
        detail["files"] = files
    return HTTPException(code, detail)


@router.post(
    "/annotate", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
    summary="Upload a batch of images to pseudo-label",
    responses={401: {"description": "missing or invalid API key"},
               413: {"description": "a file or the request is larger than allowed"},
               422: {"description": "no files, too many, not images, too many pixels, "
                                    "or a bad option"},
               503: {"description": "the queue (Redis) is unreachable"}})
def annotate(
    response: Response, owner: OwnerDep, settings: SettingsDep, store: StoreDep,
    redis: RedisDep,
    files: Annotated[list[UploadFile] | None, File(
        description="one or more images (PNG, JPEG, BMP, TIFF, WebP, GIF); file names are "
                    "kept as COCO file_name only")] = None,
    tta: Annotated[str | None, Form(
        max_length=200, description="transform preset (identity, flip, standard, paper, "
                                    "paper-relative, or '224,256+flip' / 'x0.75,x1+flip'); "
                                    "default: the service's")] = None,
    fusion: Annotated[Literal["vote", "wbf"] | None, Form(
        description="box fusion for box teachers")] = None,
    score_thresh: Annotated[float | None, Form(
        ge=0.0, le=1.0, allow_inf_nan=False,
        description="explicit detection-score threshold (default: calibrated)")] = None,
    keypoint_thresh: Annotated[float | None, Form(
        allow_inf_nan=False,
        description="explicit keypoint-score threshold (default: calibrated)")] = None,
    dataset: Annotated[str | None, Form(
        pattern=DATASET_PATTERN,
        description="groups batches whose pseudo-labels are calibrated together")] = None,
) -> JobAccepted:
    """Accepts a batch (202) after checking every file; nothing is stored when one is refused."""
    uploads = [f for f in files or [] if f.filename or f.size]
    if not uploads:
        raise _problem(422, "no files: send one or more images as multipart field 'files'")
    if len(uploads) > settings.max_files:
        raise _problem(422, f"{len(uploads)} files in one request, more than the limit of "
                            f"{settings.max_files}; split them into several batches")
    spec = tta or settings.tta
    passes = _count_passes(redis, settings, spec)

    problems: list[dict[str, str]] = []
    too_big = False
    probes = []
    for upload in uploads:
        size = _size(upload)
        name = upload.filename or "(unnamed)"
        if size > settings.max_file_bytes:
            too_big = True
            problems.append({"file": name, "error": f"{size} bytes, more than the limit of "
                                                    f"{settings.max_file_bytes}"})
            continue
        try:
            probes.append((upload, size, probe_image(upload.file, max_pixels=settings.max_pixels)))
        except RejectedError as exc:
            problems.append({"file": name, "error": str(exc)})
    if problems:
        code = 413 if too_big else 422
        raise _problem(code, f"{len(problems)} of {len(uploads)} files refused; nothing was "
                             "queued", problems)

    job_id = new_job_id()
    names = unique_names([safe_name(u.filename, i) for i, u in enumerate(uploads)])
    staging = store.staging(job_id)
    try:
        stored: list[StoredFile] = []
        for i, ((upload, size, probe), name) in enumerate(zip(probes, names, strict=True)):
            target = f"{i:06d}.img"
            atomic_write(staging / "images" / target, upload.file)
            stored.append(StoredFile(name=name, stored=target, bytes=size, width=probe.width,
                                     height=probe.height))
        record = JobRecord(
            id=job_id, owner=owner, dataset=dataset, created_at=utcnow(), files=stored,
            request=JobRequest(tta=spec, fusion=fusion or settings.fusion,
                               score_thresh=score_thresh, keypoint_thresh=keypoint_thresh),
            timeout_s=job_timeout(settings, len(stored), passes))
        store.commit(staging, record)
    except BaseException:
        store.discard(staging)
        raise
    try:
        queueing.enqueue(redis, settings.queue, job_id, timeout_s=record.timeout_s,
                         retries=settings.job_retries)
    except RedisError as exc:
        store.delete_job(job_id)  # never leave a stored job that no worker will see
        raise _problem(503, f"the queue (Redis) is unreachable, nothing was queued: {exc}"
                       ) from exc
    log.info("job %s: %d images queued (dataset %s)", job_id, len(stored), dataset)
    response.headers["Location"] = f"/jobs/{job_id}"
    return JobAccepted(
        id=job_id, dataset=dataset, images=len(stored), links=links(job_id),
        files=[AcceptedFile(name=s.name, original=u.filename, width=s.width, height=s.height,
                            bytes=s.bytes) for s, (u, _, _) in zip(stored, probes, strict=True)])


def _size(upload: UploadFile) -> int:
    if upload.size is not None:
        return int(upload.size)
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size


def _count_passes(redis: Redis, settings: Settings, spec: str) -> int:
    """Validates the preset against the served teacher's sizes; the number of passes."""
    from distill.tta import parse_preset

    base, top = 800, 1333
    try:
        for worker in queueing.live_workers(redis, settings.queue):
            card = worker.get("card") or {}
            base, top = int(card["min_size"]), int(card["max_size"])
            break
    except (RedisError, KeyError, TypeError, ValueError):
        pass  # no teacher to ask: the generic sizes still check the syntax
    try:
        return len(parse_preset(spec, base, top))
    except ConfigError as exc:
        raise _problem(422, f"bad tta: {exc}") from exc

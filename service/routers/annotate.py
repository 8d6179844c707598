"""POST /annotate: check an image batch over HTTP, then hand it to ``jobs.submit``."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status

from distill.errors import ConfigError
from distill.options import Fusion
from jobs.settings import TEACHER_NAME_PATTERN
from jobs.store import JobRequest
from jobs.submit import QueueUnavailableError, Upload, submit_job
from service.deps import OwnerDep, RedisDep, RegistryDep, SettingsDep, StoreDep
from service.models import AcceptedFile, JobAccepted
from service.uploads import RejectedError, probe_image, safe_name, unique_names
from service.views import links

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
                                    "an unknown teacher, or a bad option"},
               503: {"description": "the queue (Redis) is unreachable"}})
def annotate(
    response: Response, owner: OwnerDep, settings: SettingsDep, store: StoreDep,
    redis: RedisDep, registry: RegistryDep,
    files: Annotated[list[UploadFile] | None, File(
        description="one or more images (PNG, JPEG, BMP, TIFF, WebP, GIF); file names are "
                    "kept as COCO file_name only")] = None,
    teacher: Annotated[str | None, Form(
        pattern=TEACHER_NAME_PATTERN,
        description="registered teacher to run (GET /teachers); default: the only one")] = None,
    tta: Annotated[str | None, Form(
        max_length=200, description="transform preset (identity, flip, standard, paper, "
                                    "paper-relative, or '224,256+flip' / 'x0.75,x1+flip'); "
                                    "default: the service's")] = None,
    fusion: Annotated[Fusion | None, Form(description="box fusion for box teachers")] = None,
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
    request = JobRequest(tta=tta or settings.tta, fusion=fusion or settings.fusion,
                         score_thresh=score_thresh, keypoint_thresh=keypoint_thresh)
    checked = _check_files(uploads, settings.max_file_bytes, settings.max_pixels)
    try:
        record = submit_job(store=store, redis=redis, settings=settings, registry=registry,
                            owner=owner, uploads=checked, request=request, teacher=teacher,
                            dataset=dataset)
    except ConfigError as exc:
        raise _problem(422, str(exc)) from exc
    except QueueUnavailableError as exc:
        raise _problem(503, str(exc)) from exc
    response.headers["Location"] = f"/jobs/{record.id}"
    return JobAccepted(
        id=record.id, dataset=dataset, teacher=record.teacher, images=len(record.files),
        links=links(record.id),
        files=[AcceptedFile(name=s.name, original=u.filename, width=s.width, height=s.height,
                            bytes=s.bytes) for s, u in zip(record.files, uploads, strict=True)])


def _check_files(uploads: list[UploadFile], max_bytes: int, max_pixels: int) -> list[Upload]:
    """Sizes and probes every file; one 413/422 listing every refused file, or all accepted."""
    problems: list[dict[str, str]] = []
    too_big = False
    probed = []
    for upload in uploads:
        size = _size(upload)
        name = upload.filename or "(unnamed)"
        if size > max_bytes:
            too_big = True
            problems.append({"file": name, "error": f"{size} bytes, more than the limit of "
                                                    f"{max_bytes}"})
            continue
        try:
            probed.append((upload, size, probe_image(upload.file, max_pixels=max_pixels)))
        except RejectedError as exc:
            problems.append({"file": name, "error": str(exc)})
    if problems:
        raise _problem(413 if too_big else 422, f"{len(problems)} of {len(uploads)} files "
                       "refused; nothing was queued", problems)
    names = unique_names([safe_name(u.filename, i) for i, u in enumerate(uploads)])
    return [Upload(name=n, data=u.file, size=s, width=p.width, height=p.height)
            for n, (u, s, p) in zip(names, probed, strict=True)]


def _size(upload: UploadFile) -> int:
    if upload.size is not None:
        return int(upload.size)
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size

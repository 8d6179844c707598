"""POST /annotate: check an image batch over HTTP, then hand it to ``jobs.submit``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from distill.errors import ConfigError
from distill.options import PRESETS, Fusion
from jobs.calibration import with_last
from jobs.records import JobRecord, JobRequest
from jobs.settings import DATASET_PATTERN, TEACHER_NAME_PATTERN
from jobs.submit import QueueUnavailableError, QuotaExceededError, Upload, submit_job
from service.deps import OwnerDep, RedisDep, RegistryDep, SettingsDep, StoreDep
from service.errors import problem, responses
from service.models import AcceptedFile, JobAccepted
from service.params import SelectionFormDep
from service.uploads import RejectedError, probe_image, safe_path
from service.views import links

log = logging.getLogger(__name__)
router = APIRouter(tags=["annotate"])

RETRY_AFTER_S = 30  # a quota frees up as jobs finish: a sensible first retry


@router.post(
    "/annotate", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
    summary="Upload a batch of images to pseudo-label",
    responses=responses(400, 401, 413, 422, 429, 503, c422="no files, too many, not images, too "
                        "many pixels, an unknown teacher, a bad option, or a request that "
                        "costs more than its limits (passes, scale, megapixels)"))
def annotate(
    response: Response, owner: OwnerDep, settings: SettingsDep, store: StoreDep,
    redis: RedisDep, registry: RegistryDep, selection: SelectionFormDep,
    files: Annotated[list[UploadFile], File(
        description="one or more images (PNG, JPEG, BMP, TIFF, WebP, GIF); a file name may "
                    "be a relative path (cam1/0001.png), kept as COCO file_name")],
    teacher: Annotated[str | None, Form(
        pattern=TEACHER_NAME_PATTERN,
        description="registered teacher to run (GET /teachers); default: the only one")] = None,
    tta: Annotated[str | None, Form(
        max_length=200, description=f"transform preset ({', '.join(PRESETS)}; GET /options "
                                    "describes them), or a list such as '224,256+flip' / "
                                    "'x0.75,x1+flip'; default: the service's")] = None,
    fusion: Annotated[Fusion | None, Form(description="box fusion for box teachers")] = None,
    dataset: Annotated[str | None, Form(
        pattern=DATASET_PATTERN,
        description="groups batches whose pseudo-labels are calibrated together")] = None,
    calibration: Annotated[Literal["job", "teacher"], Form(
        description="thresholds the request does not give: 'job' calibrates them over this "
                    "job's images; 'teacher' takes those of the teacher's last job that was "
                    "calibrated over enough images (DISTILL_CALIBRATE_MIN_IMAGES) with the "
                    "same checkpoint, for a few images at a time (a labeling tool's frame); "
                    "with none yet, the job's own. Not with a dataset")] = "job",
) -> JobAccepted:
    """Accepts a batch (202) after checking every file; nothing is stored when one is refused."""
    uploads = [f for f in files if f.filename or f.size]
    if not uploads:
        raise problem(422, "no files: send one or more images as multipart field 'files'")
    if len(uploads) > settings.max_files:
        raise problem(422, f"{len(uploads)} files in one request, more than the limit of "
                           f"{settings.max_files}; split them into several batches")
    if calibration == "teacher" and dataset is not None:
        raise problem(422, "calibration=teacher is for a job on its own: a dataset's jobs are "
                           "calibrated together when it is downloaded")
    request = JobRequest(tta=tta or settings.tta, fusion=fusion or settings.fusion,
                         **selection.as_request())
    checked = _check_files(uploads, settings.max_file_bytes, settings.max_pixels)
    try:
        if calibration == "teacher":
            name = registry.resolve(teacher)
            request, source = with_last(redis, settings.queue, name,
                                        registry.get(name).sha256, request, len(checked))
            log.info("upload of %d image(s) for teacher %s, thresholds: %s", len(checked),
                     name, source)
        record = submit_job(store=store, redis=redis, settings=settings, registry=registry,
                            owner=owner, uploads=list(checked), request=request,
                            teacher=teacher, dataset=dataset)
    except ConfigError as exc:
        raise problem(422, str(exc)) from exc
    except QuotaExceededError as exc:
        raise problem(429, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
    except QueueUnavailableError as exc:
        raise problem(503, str(exc)) from exc
    response.headers["Location"] = f"/jobs/{record.id}"
    original = {u.name: u.filename for u in checked}
    return JobAccepted(
        id=record.id, dataset=dataset, teacher=record.teacher, images=len(record.files),
        links=links(record.id), renamed=record.renamed,
        thresholds_from=record.request.thresholds_from,
        files=[AcceptedFile(name=s.name, original=original.get(_was(record, s.name)),
                            width=s.width, height=s.height, bytes=s.bytes)
               for s in record.files])


def _was(record: JobRecord, name: str) -> str:
    """The name an accepted file had before it was renamed (or its own)."""
    return next((r.original for r in record.renamed if r.name == name), name)


def _check_files(uploads: list[UploadFile], max_bytes: int, max_pixels: int
                 ) -> list[_Checked]:
    """Sizes, probes and hashes every file; one 413/422 listing every refused file, or all
    accepted (named by the client's sanitised relative path)."""
    problems: list[dict[str, str]] = []
    too_big = False
    probed: list[_Checked] = []
    for upload in uploads:
        size = _size(upload)
        name = upload.filename or "(unnamed)"
        if size > max_bytes:
            too_big = True
            problems.append({"file": name, "error": f"{size} bytes, more than the limit of "
                                                    f"{max_bytes}"})
            continue
        try:
            path = safe_path(upload.filename, len(probed))
            probe = probe_image(upload.file, max_pixels=max_pixels)
        except RejectedError as exc:
            problems.append({"file": name, "error": str(exc)})
            continue
        probed.append(_Checked(path, upload.file, size, probe.width, probe.height,
                               _sha256(upload), filename=upload.filename))
    if problems:
        raise problem(413 if too_big else 422, f"{len(problems)} of {len(uploads)} files "
                      "refused; nothing was queued", files=problems)
    return probed


@dataclass(frozen=True)
class _Checked(Upload):
    """An :class:`Upload` that remembers the file name the client sent."""

    filename: str | None = None


def _sha256(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    for chunk in iter(lambda: upload.file.read(1 << 20), b""):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


def _size(upload: UploadFile) -> int:
    if upload.size is not None:
        return int(upload.size)
    upload.file.seek(0, 2)
    size = upload.file.tell()
    upload.file.seek(0)
    return size

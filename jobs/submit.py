"""Accepting a job: check it against its teacher, store it, queue it.

The API route does the HTTP part (reading and probing the uploads); this is
the rest, callable without HTTP. A job is either stored *and* queued, or
neither: a staged directory is published atomically, and a job that cannot
be queued is deleted again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import BinaryIO

from redis import Redis
from redis.exceptions import RedisError

from distill.errors import ConfigError, DistillError
from distill.tta.transforms import parse_preset
from jobs import queueing
from jobs.settings import Settings, job_timeout
from jobs.store import JobRecord, JobRequest, JobStore, StoredFile, atomic_write, new_job_id, utcnow
from jobs.teachers import TeacherRegistry

log = logging.getLogger(__name__)


class QueueUnavailableError(DistillError):
    """Redis could not be reached; nothing was stored or queued."""


@dataclass(frozen=True)
class Upload:
    """One checked image: the name it gets in the output, its bytes, its size."""

    name: str
    data: BinaryIO
    size: int
    width: int
    height: int


def count_passes(registry: TeacherRegistry, teacher: str, tta: str) -> int:
    """Checks a preset against the teacher's input sizes; the number of passes per image."""
    card = registry.get(teacher).require_card()
    try:
        return len(parse_preset(tta, card.min_size, card.max_size))
    except ConfigError as exc:
        raise ConfigError(f"bad tta for teacher {teacher!r}: {exc}") from exc


def submit_job(*, store: JobStore, redis: Redis, settings: Settings, registry: TeacherRegistry,
               owner: str, uploads: list[Upload], request: JobRequest, teacher: str | None,
               dataset: str | None) -> JobRecord:
    """Stores the images and the record, then queues the job on its teacher's queue.

    Raises ConfigError (unknown teacher, bad preset), QueueUnavailableError.
    """
    name = registry.resolve(teacher)
    passes = count_passes(registry, name, request.tta)
    registered = registry.get(name)
    job_id = new_job_id()
    staging = store.staging(job_id)
    try:
        stored: list[StoredFile] = []
        for i, upload in enumerate(uploads):
            target = f"{i:06d}.img"
            atomic_write(staging / "images" / target, upload.data)
            stored.append(StoredFile(name=upload.name, stored=target, bytes=upload.size,
                                     width=upload.width, height=upload.height))
        record = JobRecord(
            id=job_id, owner=owner, dataset=dataset, created_at=utcnow(), files=stored,
            request=request, timeout_s=job_timeout(settings, len(stored), passes),
            teacher=name, teacher_sha256=registered.sha256)
        store.commit(staging, record)
    except BaseException:
        store.discard(staging)
        raise
    try:
        queueing.enqueue(redis, queueing.queue_name(settings.queue, name), job_id,
                         timeout_s=record.timeout_s, retries=settings.job_retries)
    except RedisError as exc:
        store.delete_job(job_id)  # never leave a stored job that no worker will see
        raise QueueUnavailableError(
            f"the queue (Redis) is unreachable, nothing was queued: {exc}") from exc
    log.info("job %s: %d images queued for teacher %s (dataset %s)", job_id, len(stored),
             name, dataset)
    return record

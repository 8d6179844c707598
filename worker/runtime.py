"""What a worker process holds for its whole life: its teachers, each loaded once, and the store.

RQ looks job functions up by name, so :func:`worker.tasks.annotate_job`
reaches the loaded teachers through :func:`current`; the worker command
installs the runtime at start-up (never at import), before taking any job.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redis import Redis

from distill.annotate import Teacher
from distill.options import Fusion, InferenceOptions
from jobs.references import References
from jobs.store import JobStore

log = logging.getLogger(__name__)


class TeacherPool:
    """One registered checkpoint, loaded once; a :class:`Teacher` per (tta, fusion) that
    jobs ask for. :meth:`refresh` reloads it when the file was replaced."""

    def __init__(self, name: str, checkpoint: Path, base: InferenceOptions, *,
                 cache: int = 8) -> None:
        self.name = name
        self.checkpoint = Path(checkpoint)
        self.base = base
        self._cache = cache
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        stat = self.checkpoint.stat()
        self._identity = (stat.st_size, stat.st_mtime_ns)
        self.default = Teacher.load(self.checkpoint, self.base)
        self.card = self.default.card
        self._variants: OrderedDict[tuple[str, Fusion], Teacher] = OrderedDict(
            {(self.base.tta, self.base.fusion.method): self.default})

    @property
    def sha256(self) -> str:
        """Checksum of the loaded checkpoint: the teacher's identity in the store."""
        return self.default.sha256

    def refresh(self) -> bool:
        """Reloads the checkpoint if its file changed since it was loaded; True if it did.

        Called before each job, so that a checkpoint replaced under a running service
        serves new jobs without a restart.
        """
        stat = self.checkpoint.stat()
        if (stat.st_size, stat.st_mtime_ns) == self._identity:
            return False
        with self._lock:
            old = self.sha256
            self._load()
        log.info("teacher %s: %s changed, reloaded (sha256 %s... -> %s...)", self.name,
                 self.checkpoint, old[:12], self.sha256[:12])
        return True

    def get(self, tta: str, fusion: Fusion) -> Teacher:
        """The teacher for a transform preset and fusion (raises ConfigError on bad ones)."""
        key = (tta, fusion)
        with self._lock:
            if key in self._variants:
                self._variants.move_to_end(key)
                return self._variants[key]
            options = replace(self.base, tta=tta, fusion=replace(self.base.fusion, method=fusion))
            teacher = self.default.with_options(options)
            self._variants[key] = teacher
            while len(self._variants) > self._cache:
                self._variants.popitem(last=False)
            return teacher

    def describe(self) -> dict[str, Any]:
        """The teacher and how the worker runs it, as announced to the API."""
        return {"teacher": self.name, "sha256": self.sha256, "checkpoint": self.checkpoint.name,
                "device": self.base.device, "default_tta": self.base.tta,
                "default_fusion": self.base.fusion.method}


@dataclass
class Runtime:
    """The loaded teachers (by name, each with its queue), the store, the worker's name and
    the Redis its jobs push their metrics to."""

    teachers: dict[str, TeacherPool]
    queues: dict[str, str]  # teacher name -> queue name
    store: JobStore
    worker_name: str
    # Where jobs push their metrics (jobs.metrics); None: not recorded (tests, tools).
    redis: Redis | None = None
    queue_prefix: str = "distill"
    # The worker's own folder for a job's fetched images and appended log (removed after
    # each job), and how it lists and reads images referenced in place (None: it cannot).
    cache: Path = Path("data/cache")
    references: References | None = None
    # A job annotating at least this many images is remembered as its teacher's last
    # calibration (jobs.calibration; DISTILL_CALIBRATE_MIN_IMAGES).
    calibrate_min_images: int = 20


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Makes ``runtime`` the one this process's jobs use (called by the worker at start-up)."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    """The installed runtime; jobs fail clearly when run outside ``distill worker``."""
    if _runtime is None:
        raise RuntimeError("no worker runtime installed: annotation jobs must run in "
                           "`distill worker`, which loads the teachers first")
    return _runtime


def installed() -> Runtime | None:
    """The installed runtime, or None (e.g. in a process that only cleans registries)."""
    return _runtime

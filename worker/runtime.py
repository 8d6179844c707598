"""What a worker process holds for its whole life: the teacher, loaded once, and the store.

RQ looks job functions up by name, so :func:`worker.tasks.annotate_job`
reaches the loaded teacher through :func:`current`; the worker command
installs the runtime at start-up (never at import), before taking any job.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.annotate import InferenceOptions, Teacher
from distill.tta import Fusion
from worker.store import JobStore


class TeacherPool:
    """One checkpoint loaded once; a :class:`Teacher` per (tta, fusion) that jobs ask for."""

    def __init__(self, checkpoint: Path, base: InferenceOptions, *, cache: int = 8) -> None:
        self.checkpoint = Path(checkpoint)
        self.default = Teacher.load(self.checkpoint, base)
        self.card = self.default.card
        self.base = base
        self._variants: OrderedDict[tuple[str, Fusion], Teacher] = OrderedDict()
        self._cache = cache
        self._lock = threading.Lock()
        self._variants[(base.tta, base.fusion.method)] = self.default

    @property
    def sha256(self) -> str:
        """Checksum of the checkpoint file: the teacher's identity in the store."""
        return str(self.card.provenance["sha256"])

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
        """The card and how the worker runs it, as announced to the API."""
        return {"card": self.card.to_dict(), "sha256": self.sha256,
                "checkpoint": self.checkpoint.name, "device": self.base.device,
                "default_tta": self.base.tta, "default_fusion": self.base.fusion.method}


@dataclass
class Runtime:
    """The loaded teacher pool, the store and the worker's name."""

    teachers: TeacherPool
    store: JobStore
    worker_name: str
    queue: str


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Makes ``runtime`` the one this process's jobs use (called by the worker at start-up)."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    """The installed runtime; jobs fail clearly when run outside ``distill worker``."""
    if _runtime is None:
        raise RuntimeError("no worker runtime installed: annotation jobs must run in "
                           "`distill worker`, which loads the teacher first")
    return _runtime


def installed() -> Runtime | None:
    """The installed runtime, or None (e.g. in a process that only cleans registries)."""
    return _runtime

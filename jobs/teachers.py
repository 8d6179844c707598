"""The registry of teachers by name: where each checkpoint is, and its card, read without torch.

The API validates a job's teacher and preset against the card and records the
checkpoint's checksum in the job; the worker loads the same files. Cards are
cached per file and re-read when the file changes (its size or modification
time), so a checkpoint replaced under a running service gives new jobs the new
checksum, while finished jobs keep the card they ran with (``card.json``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from distill.card import ModelCard
from distill.cardfile import card_with_checksum, file_sha256, read_card
from distill.errors import ConfigError, DistillError


class UnknownTeacherError(ConfigError):
    """A job names a teacher that is not registered, or names none when several are."""


@dataclass(frozen=True)
class RegisteredTeacher:
    """One registered checkpoint: its card and checksum, or why it cannot be read."""

    name: str
    path: Path
    card: ModelCard | None
    sha256: str | None
    error: str | None = None

    def require_card(self) -> ModelCard:
        """The card, or a :class:`ConfigError` saying why the checkpoint is unusable."""
        if self.card is None:
            raise ConfigError(f"teacher {self.name!r} is unusable: {self.error}")
        return self.card


class TeacherRegistry:
    """Name -> checkpoint, with cards cached by file identity. Thread-safe.

    ``paths`` is a mapping, or a function returning one, called on every lookup
    (a folder of checkpoints is then listed anew, so new files are picked up).
    """

    def __init__(self, paths: Mapping[str, Path] | Callable[[], Mapping[str, Path]]) -> None:
        self._source = paths if callable(paths) else (lambda: paths)
        self._cache: dict[Path, tuple[tuple[int, int], RegisteredTeacher]] = {}
        self._lock = threading.Lock()

    @property
    def paths(self) -> dict[str, Path]:
        """Name -> checkpoint path, as registered right now."""
        return dict(self._source())

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self.paths)

    def resolve(self, name: str | None) -> str:
        """The teacher a job is for: ``name``, or the only registered one when None."""
        names = self.names()
        if name is None or name == "":
            if len(names) == 1:
                return names[0]
            if not names:
                raise UnknownTeacherError("no teacher is registered: set DISTILL_TEACHERS "
                                          "(name=path,...) or DISTILL_TEACHER")
            raise UnknownTeacherError(f"several teachers are registered, name one with "
                                      f"teacher=...: {', '.join(names)}")
        if name not in names:
            raise UnknownTeacherError(f"unknown teacher {name!r}; registered: "
                                      f"{', '.join(names) or '(none)'}")
        return name

    def get(self, name: str) -> RegisteredTeacher:
        """The teacher's current card and checksum (re-read when its file changed)."""
        path = self.paths[self.resolve(name)]
        try:
            stat = path.stat()
        except OSError as exc:
            return RegisteredTeacher(name, path, None, None, f"cannot read {path}: {exc}")
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        try:
            sha = file_sha256(path)
            card = card_with_checksum(read_card(path), path, sha)
            teacher = RegisteredTeacher(name, path, card, sha)
        except (DistillError, OSError) as exc:
            teacher = RegisteredTeacher(name, path, None, None, str(exc))
        with self._lock:
            self._cache[path] = (key, teacher)
        return teacher

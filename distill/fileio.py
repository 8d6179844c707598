"""Atomic file writes (temp file in the same folder, fsync, rename), and JSON reads
that fail with a message naming the file.

A reader (another process, a restarted job, a crashed run's successor) sees
either the old file or the new one, never half of one. Every artifact the
project writes goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from distill.errors import DataError


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Writes JSON atomically; NaN and infinity are refused (they are not JSON)."""
    with atomic_writer(path) as fh:
        fh.write(json.dumps(data, allow_nan=False, indent=indent).encode("utf-8"))


def read_json(path: Path, what: str) -> Any:
    """Parses a JSON file; a missing or malformed one is a :class:`DataError` saying
    ``what`` it should have been."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{what} {str(path)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc

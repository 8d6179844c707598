"""Log lines as text or as one JSON object per line, with context fields on every line.

``configure_logging("json")`` makes every record of the process (the root
logger's, so RQ's, uvicorn's and the libraries' too) one JSON object per line:
``time``, ``level``, ``logger``, ``message``, ``exception`` when one is
attached, and the fields of the current :func:`log_context` (the worker sets
``job_id`` while it processes a job). Log shippers (Loki, Elasticsearch,
CloudWatch) then index the job id without parsing free text.

The context lives in a :class:`~contextvars.ContextVar`, read when a record is
formatted: a ``with log_context(job_id=...)`` block tags everything logged in
it, by any module, without passing the id down. Plain stdlib, so that the
core's command line configures logging for every subcommand without
importing the job layer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, get_args

from distill.errors import ConfigError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("distill_log_context", default=_EMPTY)
# Fields that a caller may also pass per record (``log.info(..., extra={"job_id": ...})``).
_EXTRA_FIELDS = ("job_id",)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Adds ``fields`` to every record logged inside the block (nested blocks add theirs)."""
    token = _context.set(MappingProxyType({**_context.get(), **fields}))
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    """The fields the current block adds to log records."""
    return _context.get()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context fields, overridden by the same fields given explicitly on the record."""
    fields: dict[str, Any] = dict(_context.get())
    for name in _EXTRA_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, not more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object; non-ASCII text is kept as is."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            # Cached on the record like logging.Formatter does, for other handlers.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(_fields(record))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic ``time level logger: message`` line, with ``[job_id=...]`` when set."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The usual text line; context fields are appended before any traceback."""
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        tag = " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        first, sep, rest = text.partition("\n")
        return first + tag + sep + rest


class _Handler(logging.StreamHandler):
    """The root handler installed here (so that a second call replaces it)."""


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Sends every record of the process to stderr in format ``fmt`` (``text`` or ``json``).

    Like :func:`logging.basicConfig`, leaves logging alone when the root logger
    already has handlers that this function did not install (a test runner's, an
    application's that embeds distill); replaces its own. In ``json`` form Python
    warnings are logged too, so that nothing but JSON lines reaches stderr.
    """
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if len(ours) < len(root.handlers):
        return
    for old in ours:
        root.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(fmt == "json")

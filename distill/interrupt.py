"""Stopping long inference between transform passes, without threading a callback through.

A caller that may need to stop a run (the worker, when its job is cancelled)
wraps it in :func:`interruptible` with a check that raises; the
multi-transform loops call :func:`checkpoint` between passes. Without an
installed check, :func:`checkpoint` costs one context-variable lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_check: ContextVar[Callable[[], None] | None] = ContextVar("distill_interrupt", default=None)


@contextmanager
def interruptible(check: Callable[[], None], *, every_s: float = 0.5) -> Iterator[None]:
    """Runs the block with ``check`` called at each :func:`checkpoint`, at most once per
    ``every_s`` seconds; whatever ``check`` raises stops the run."""
    last = [float("-inf")]

    def throttled() -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            check()

    token = _check.set(throttled)
    try:
        yield
    finally:
        _check.reset(token)


def cancel_point() -> None:
    """A point where a run may be stopped (between transform passes)."""
    check = _check.get()
    if check is not None:
        check()

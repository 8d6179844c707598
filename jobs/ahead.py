"""Iterating ahead: a thread takes items from a slow iterator while the caller works on
the ones before (a plan splits one page of a listing while the next one is fetched)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

_T = TypeVar("_T")


def ahead(items: Iterator[_T], chunk: int = 1000, depth: int = 3
          ) -> Generator[_T, None, None]:
    """``items``, taken from ``items`` by a thread up to ``depth`` chunks ahead: a bucket
    answers the next page of a listing while this one is named and committed (S3 pages
    follow one another, so a plan would otherwise wait on every page). An exception of
    ``items`` is raised here; closing the iterator stops the thread."""
    pieces: queue.Queue[list[_T] | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def put(piece: list[_T] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pieces.put(piece, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        piece: list[_T] = []
        try:
            for item in items:
                piece.append(item)
                if len(piece) >= chunk:
                    if not put(piece):
                        return
                    piece = []
            if put(piece):
                put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            if put(piece):  # after the items that came before it
                put(exc)

    thread = threading.Thread(target=produce, name="plan-listing", daemon=True)
    thread.start()
    try:
        while (got := pieces.get()) is not None:
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()

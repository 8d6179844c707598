"""``jobs.ahead.ahead``: a plan's listing taken ahead by a thread must give the same items
in the same order, raise the listing's error where the plan reads it (after the items
before it, so the plan's cursor is right), and stop reading when the plan stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from jobs.ahead import ahead


def test_items_arrive_in_order_across_chunks() -> None:
    assert list(ahead(iter(range(2_503)), chunk=100, depth=2)) == list(range(2_503))
    assert list(ahead(iter([]))) == []


def test_an_error_of_the_listing_is_raised_after_the_items_before_it() -> None:
    def listing() -> Iterator[int]:
        yield from range(5)
        raise ValueError("the bucket went away")

    got: list[int] = []
    with pytest.raises(ValueError, match="went away"):
        for item in ahead(listing(), chunk=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_closing_stops_the_thread_from_reading_further() -> None:
    read: list[int] = []

    def listing() -> Iterator[int]:
        for n in range(1_000_000):
            read.append(n)
            yield n

    before = threading.active_count()
    items = ahead(listing(), chunk=10, depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    time.sleep(0.5)  # the thread notices within its 0.1 s put timeout
    stopped_at = len(read)
    time.sleep(0.3)
    assert len(read) == stopped_at < 100  # a few chunks ahead at most, then nothing
    assert threading.active_count() == before

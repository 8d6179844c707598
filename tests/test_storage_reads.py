"""``jobs.storage.read_all``: side-by-side reads on the process's shared reader threads.

Many requests counting large datasets on a bucket at once must not each start their own
pool: they share ``READ_THREADS`` threads, each call keeping at most its storage's
``parallel_reads`` in flight, results in order; a failure stops the call's later reads;
a forked child (RQ's work horse) reads with threads of its own.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs import storage as storage_module
from jobs.storage import LocalStorage, read_all


class SlowBucket(LocalStorage):
    """A local store that claims a bucket's parallelism (what the reads overlap)."""

    parallel_reads = 4


def test_concurrent_calls_share_the_threads_and_keep_their_windows(tmp_path: Path) -> None:
    store = SlowBucket(tmp_path)
    lock = threading.Lock()
    in_flight: Counter[int] = Counter()
    peak: Counter[int] = Counter()
    total = {"now": 0, "peak": 0}
    threads: set[str] = set()

    def read(item: tuple[int, int]) -> tuple[int, int]:
        call, _ = item
        with lock:
            in_flight[call] += 1
            total["now"] += 1
            peak[call] = max(peak[call], in_flight[call])
            total["peak"] = max(total["peak"], total["now"])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            in_flight[call] -= 1
            total["now"] -= 1
        return item

    results: dict[int, list[tuple[int, int]]] = {}

    def count(call: int) -> None:
        results[call] = read_all(store, read, [(call, n) for n in range(30)])

    callers = [threading.Thread(target=count, args=(c,)) for c in range(6)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=60)
    assert all(results[c] == [(c, n) for n in range(30)] for c in range(6))
    assert max(peak.values()) <= SlowBucket.parallel_reads
    # The calls overlapped on the shared threads (more in flight than one window) ...
    assert total["peak"] > SlowBucket.parallel_reads
    # ... and six calls of four did not start 24 threads.
    assert len(threads) <= storage_module.READ_THREADS
    assert total["peak"] <= storage_module.READ_THREADS
    assert all(name.startswith("reads") for name in threads)


def test_a_failed_read_is_raised_and_stops_the_later_reads(tmp_path: Path) -> None:
    started: list[int] = []

    def read(n: int) -> int:
        started.append(n)
        if n == 3:
            raise ValueError("bad object 3")
        time.sleep(0.01)
        return n

    with pytest.raises(ValueError, match="bad object 3"):
        read_all(SlowBucket(tmp_path), read, range(200))
    assert 3 in started and len(started) < 50


def test_a_local_directory_reads_in_the_calling_thread(tmp_path: Path) -> None:
    names = read_all(LocalStorage(tmp_path), lambda n: threading.current_thread().name,
                     range(5))
    assert names == [threading.current_thread().name] * 5


def _child(root: str, out: multiprocessing.Queue) -> None:
    out.put(read_all(SlowBucket(Path(root)), lambda n: n * 2, range(20)))


def test_a_forked_child_reads_with_threads_of_its_own(tmp_path: Path) -> None:
    # The parent's pool exists (and holds threads) before the fork.
    assert read_all(SlowBucket(tmp_path), lambda n: n, range(20)) == list(range(20))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(str(tmp_path), out))
    child.start()
    try:
        assert out.get(timeout=30) == [n * 2 for n in range(20)]
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0

"""``distill worker``: an RQ worker that loads its teachers once and serves their queues."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.errors import ConfigError
from distill.options import INFERENCE_FLAGS
from jobs.settings import Settings, check_teacher_name, get_settings, overlay, teacher_paths

if TYPE_CHECKING:
    from redis import Redis

    from worker.rqworker import DistillWorker

log = logging.getLogger(__name__)

# Command-line flags that override a setting of the same name when given.
_OVERRIDES = ("queue", "data_dir", "worker_name", *INFERENCE_FLAGS)


def register(sub: Any) -> None:
    """Adds ``distill worker`` to the ``distill`` command line."""
    from distill.cli_args import add_inference_arguments

    p = sub.add_parser("worker", help="run an RQ worker that pseudo-labels queued image batches",
                       description="Settings come from DISTILL_* variables and REDIS_URL; "
                                   "flags given here override them.")
    p.add_argument("--teacher", dest="worker_teachers", action="append",
                   help="registered teacher NAME to serve (repeat for several), or a checkpoint "
                        "PATH (registered under its file stem); default: every registered "
                        "teacher (DISTILL_TEACHERS / DISTILL_TEACHER)")
    p.add_argument("--queue", help="queue-name prefix (DISTILL_QUEUE)")
    p.add_argument("--data-dir", help="shared data directory (DISTILL_DATA_DIR)")
    p.add_argument("--name", dest="worker_name", help="worker name (default host.pid.random)")
    p.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    p.add_argument("--check", action="store_true",
                   help="health probe: exit 0 when a worker on this host has a current "
                        "heartbeat in Redis, 1 otherwise (container healthchecks)")
    add_inference_arguments(p)
    # Unset flags must not override settings: clear the shared arguments' defaults.
    p.set_defaults(func=_cmd_worker, worker_teachers=None, threads=None,
                   **{k: None for k in _OVERRIDES})


def _cmd_worker(args: argparse.Namespace) -> int:
    # A flag set to 0 (say --keypoint-cap 0) is given; an unset one is None, and an unset
    # switch (--half, --size-dependent) is False: neither overrides its setting.
    given = {k: v for k in _OVERRIDES if (v := getattr(args, k, None)) is not False}
    settings = overlay(get_settings(), {**given, "torch_threads": args.threads})
    teachers = served_teachers(settings, args.worker_teachers or settings.worker_teachers)
    if args.check:
        return check_alive(settings, teachers)
    return run_worker(settings, teachers, burst=args.burst)


def served_teachers(settings: Settings, wanted: list[str]) -> dict[str, Path]:
    """Name -> checkpoint of the teachers this worker serves.

    Each entry of ``wanted`` is a registered name or a checkpoint path (named by
    its stem); none wanted means every registered teacher.
    """
    registered = teacher_paths(settings)
    if not wanted:
        if not registered:
            raise ConfigError("no teacher to serve: set DISTILL_TEACHERS (name=path,...) or "
                              "DISTILL_TEACHER, or pass --teacher PATH")
        return registered
    served: dict[str, Path] = {}
    for item in wanted:
        if item in registered:
            served[item] = registered[item]
        elif Path(item).suffix and Path(item).is_file():
            served[check_teacher_name(Path(item).stem)] = Path(item)
        else:
            raise ConfigError(f"--teacher {item!r} is neither a registered teacher "
                              f"({', '.join(sorted(registered)) or 'none registered'}) nor a "
                              "checkpoint file")
    return served


def check_alive(settings: Settings, teachers: dict[str, Path]) -> int:
    """0 when a worker on this host is announced (its heartbeat is current), else 1."""
    from redis.exceptions import RedisError

    from jobs import queueing
    from jobs.connection import connect

    try:
        handle = connect(settings)
        try:
            live = [w for name in teachers for w in queueing.live_workers(
                handle.redis, queueing.queue_name(settings.queue, name))]
        finally:
            handle.close()
    except RedisError as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    mine = {w.get("worker") for w in live if w.get("hostname") == socket.gethostname()}
    print(f"{'healthy' if mine else 'unhealthy'}: {len(mine)} live worker(s) on this host")
    return 0 if mine else 1


def run_worker(settings: Settings, teachers: dict[str, Path], *, burst: bool = False) -> int:
    """Loads every teacher once, then works their queues until stopped (or empty, with
    ``burst``)."""
    from rq import Queue

    from distill.threads import apply_thread_budget
    from jobs import queueing
    from jobs.connection import connect
    from jobs.maintenance import run_maintenance
    from jobs.settings import cache_dir, inference_options, open_store, references
    from jobs.teachers import TeacherRegistry
    from worker.inputs import claim_cache
    from worker.rqworker import DistillWorker
    from worker.runtime import Runtime, TeacherPool, install

    threads = apply_thread_budget(settings.torch_threads)
    name = settings.worker_name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    options = inference_options(settings)
    pools = {t: TeacherPool(t, path, options) for t, path in teachers.items()}
    queues = {t: queueing.queue_name(settings.queue, t) for t in teachers}
    for t, pool in pools.items():
        log.info("worker %s: teacher %s = %s (sha256 %s...) on %s (%d threads), queue %r",
                 name, t, pool.checkpoint, pool.sha256[:12], settings.device, threads, queues[t])
    handle = connect(settings)
    store = open_store(settings)
    install(Runtime(pools, queues, store, name, redis=handle.redis,
                    queue_prefix=settings.queue, cache=claim_cache(cache_dir(settings), name),
                    references=references(settings),
                    calibrate_min_images=settings.calibrate_min_images))
    registry = TeacherRegistry({**teacher_paths(settings), **teachers})

    def make_worker(worker_name: str) -> DistillWorker:
        # Plans first: they are short and make the work the teachers' queues then hold.
        served = [queueing.plan_queue(settings.queue), *queues.values()]
        return DistillWorker([Queue(q, connection=handle.redis) for q in served],
                             name=worker_name, lease_s=settings.heartbeat_ttl_s,
                             interval_s=settings.heartbeat_interval_s,
                             teachers={queues[t]: pools[t].describe for t in teachers},
                             maintenance=lambda: run_maintenance(store, handle.redis, settings,
                                                                 registry.resolve),
                             maintenance_interval_s=settings.maintenance_interval_s)

    try:
        return supervise(make_worker, name, handle.redis, burst=burst)
    finally:
        handle.close()


def supervise(make_worker: Callable[[str], DistillWorker], name: str, redis: Redis, *,
              burst: bool) -> int:
    """Runs RQ's work loop, and runs it again when it ends because Redis went away.

    RQ's loop quits on any Redis error (a restart, a failover); the process then
    waits until Redis answers and starts a fresh loop, with the teachers still
    loaded. A job caught in the outage was written to the store; RQ requeues it
    as abandoned and its second delivery finds it finished. Only a stop request
    (SIGTERM, SIGINT) or the end of a burst ends the process.
    """
    from redis.exceptions import RedisError

    restarts = 0
    while True:
        # A fresh RQ identity per loop: the lost one may still be registered as alive.
        worker = make_worker(name if restarts == 0 else f"{name}.r{restarts}")
        worker.start_heartbeat()
        try:
            worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()),
                        with_scheduler=False)
        except RedisError as exc:
            log.warning("worker %s lost Redis: %s", worker.name, exc)
        finally:
            worker.stop_heartbeat()
        if burst or _stop_requested(worker):
            return 0
        restarts += 1
        delay = 0.5
        while not _stop_requested(worker):
            try:
                redis.ping()
                break
            except RedisError:
                time.sleep(delay)
                delay = min(5.0, delay * 2)
        if _stop_requested(worker):
            return 0
        log.warning("Redis answers again: worker %s restarts its loop (restart %d)", name,
                    restarts)


def _stop_requested(worker: DistillWorker) -> bool:
    """SIGTERM/SIGINT reached RQ's handler: a busy worker sets ``_stop_requested``, an idle
    one only records the date (RQ 3)."""
    return bool(worker._stop_requested
                or getattr(worker, "_shutdown_requested_date", None) is not None)

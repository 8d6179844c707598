"""``distill worker``: an RQ worker that loads its teacher once and serves one queue."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import uuid
from typing import Any

from distill.errors import ConfigError
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Command-line flags that override a setting of the same name when given.
_OVERRIDES = ("teacher", "queue", "tta", "fusion", "device", "half", "batch_size", "vote_iou",
              "vote_scoring", "heatmap_combine", "size_dependent", "data_dir", "worker_name")


def register(sub: Any) -> None:
    """Adds ``distill worker`` to the ``distill`` command line."""
    from distill.cli import add_inference_arguments

    p = sub.add_parser("worker", help="run an RQ worker that pseudo-labels queued image batches",
                       description="Settings come from DISTILL_* variables and REDIS_URL; "
                                   "flags given here override them.")
    p.add_argument("--teacher", help="teacher checkpoint (DISTILL_TEACHER)")
    p.add_argument("--queue", help="queue name (DISTILL_QUEUE)")
    p.add_argument("--data-dir", help="shared data directory (DISTILL_DATA_DIR)")
    p.add_argument("--name", dest="worker_name", help="worker name (default host.pid.random)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--check", action="store_true",
                   help="health probe: exit 0 when a worker on this host has a current "
                        "heartbeat in Redis, 1 otherwise (container healthchecks)")
    add_inference_arguments(p)
    # Unset flags must not override settings: clear the shared arguments' defaults.
    p.set_defaults(func=_cmd_worker, **{k: None for k in _OVERRIDES})


def _cmd_worker(args: argparse.Namespace) -> int:
    given = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) not in (None, False)}
    settings = Settings.model_validate({**get_settings().model_dump(), **given})
    if args.check:
        return check_alive(settings)
    return run_worker(settings, burst=args.burst)


def check_alive(settings: Settings) -> int:
    """0 when a worker on this host is announced (its heartbeat is current), else 1."""
    from redis.exceptions import RedisError

    from worker import queueing
    from worker.connection import connect

    try:
        handle = connect(settings)
        try:
            live = queueing.live_workers(handle.redis, settings.queue)
        finally:
            handle.close()
    except RedisError as exc:
        print(f"unhealthy: Redis unreachable: {exc}")
        return 1
    mine = [w for w in live if w.get("hostname") == socket.gethostname()]
    print(f"{'healthy' if mine else 'unhealthy'}: {len(mine)} live worker(s) on this host")
    return 0 if mine else 1


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    """Loads the teacher, then works the queue until stopped (or empty, with ``burst``)."""
    from rq import Queue

    from worker.connection import connect
    from worker.rqworker import DistillWorker
    from worker.runtime import Runtime, TeacherPool, install
    from worker.settings import inference_options
    from worker.store import JobStore

    if settings.teacher is None:
        raise ConfigError("no teacher checkpoint: set DISTILL_TEACHER or pass --teacher")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    name = settings.worker_name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    pool = TeacherPool(settings.teacher, inference_options(settings))
    log.info("worker %s: teacher %s (sha256 %s...) on %s, queue %r", name, settings.teacher,
             pool.sha256[:12], settings.device, settings.queue)
    handle = connect(settings)
    install(Runtime(pool, JobStore(settings.data_dir), name, settings.queue))
    worker = DistillWorker(Queue(settings.queue, connection=handle.redis), name=name,
                           lease_s=settings.heartbeat_ttl_s,
                           interval_s=settings.heartbeat_interval_s, teacher=pool.describe())
    worker.start_heartbeat()
    try:
        worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()),
                    with_scheduler=False)
    finally:
        worker.stop_heartbeat()
        handle.close()
    return 0

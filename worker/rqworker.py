"""The RQ worker class: in-process execution, a heartbeat thread, fast recovery of lost jobs.

Why ``SimpleWorker`` (no fork per job): the teacher is loaded once per
process; a forked work-horse would inherit torch's OpenMP/CUDA state, which
is not fork-safe (CUDA contexts cannot cross a fork at all), and a spawned
one would reload the model for every job.

Why a heartbeat thread: RQ's ``SimpleWorker`` runs the job in the main
thread and gives the execution a lease of the whole job timeout, so a
SIGKILLed worker's job stays "started" for that long. Here the lease is
short (``lease_s``) and a thread renews it every ``interval_s`` through RQ's
own ``maintain_heartbeats``. The same thread announces the worker and its
teachers to the API, runs the StartedJobRegistry cleanup, which requeues
(``Retry``) jobs whose lease expired, so that a replacement or a sibling
worker picks a dead worker's job up within about ``lease_s + interval_s``,
and runs the periodic maintenance (:mod:`jobs.maintenance`): lost jobs back
into their queues, expired jobs deleted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from jobs import queueing
from jobs.logs import job_context

log = logging.getLogger(__name__)


class DistillWorker(SimpleWorker):
    """A ``SimpleWorker`` with short, thread-renewed job leases and a live-teacher announcement."""

    def __init__(self, queues: list[Queue], *, name: str, lease_s: int, interval_s: float,
                 teachers: Mapping[str, Callable[[], dict[str, Any]]],
                 maintenance: Callable[[], object] | None = None,
                 maintenance_interval_s: float = 30.0) -> None:
        """``teachers`` maps each queue's name to a function describing its teacher now
        (a replaced checkpoint is announced with its new checksum). ``maintenance``, if
        given, runs from the heartbeat thread every ``maintenance_interval_s`` seconds."""
        super().__init__(queues, name=name, connection=queues[0].connection,
                         job_monitoring_interval=max(1, round(interval_s)))
        self.lease_s = int(lease_s)
        self.interval_s = float(interval_s)
        self.teachers = teachers
        self.maintenance = maintenance
        self.maintenance_interval_s = float(maintenance_interval_s)
        self._last_maintenance = float("-inf")
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self._current: tuple[Job, Execution] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The execution lease: how long a silent worker keeps its job."""
        return self.lease_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Runs the job in this process while the heartbeat thread renews its lease."""
        execution = self.prepare_execution(job)
        with self._lock:
            self._current = (job, execution)
        try:
            self.beat()  # announce "busy" right away
            # RQ's own lines about the job (its result, a retry, the failure callback)
            # carry the job id too, not only the task's.
            with job_context(job.id):
                self.perform_job(job, queue, execution)
        finally:
            with self._lock:
                self._current = None
        self.set_state(WorkerStatus.IDLE)

    # -- heartbeat thread -----------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Starts the daemon thread (call before ``work``)."""
        self._thread = threading.Thread(target=self._run, name="distill-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stops the thread and withdraws the announcement."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for queue in self.queues:
            queueing.withdraw(self.connection, queue.name, self.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
                self.reap_abandoned()
                self._maintain()
            except RedisError as exc:  # Redis away for a moment: keep trying, leases are long
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            self._stop.wait(self.interval_s)

    def beat(self) -> None:
        """Renews the current job's lease and the worker's announcement."""
        with self._lock:
            current = self._current
        if current is not None:
            self.maintain_heartbeats(*current)
        for queue in self.queues:
            payload = {
                "worker": self.name, "hostname": socket.gethostname(), "pid": os.getpid(),
                "queue": queue.name, "started": self.started,
                "state": "busy" if current else "idle", "job": current[0].id if current else None,
                "last_seen": datetime.now(UTC).isoformat(timespec="seconds"),
                **(self.teachers[queue.name]() if queue.name in self.teachers else {}),
            }
            queueing.announce(self.connection, queue.name, self.name, payload,
                              ttl_s=self.lease_s)

    def _maintain(self) -> None:
        now = time.monotonic()
        if self.maintenance is None or now - self._last_maintenance < self.maintenance_interval_s:
            return
        self._last_maintenance = now
        self.maintenance()

    def reap_abandoned(self) -> None:
        """Requeues (or fails, with no retries left) jobs whose worker stopped renewing them.

        Uses RQ's own cleanup under RQ's maintenance lock, so only one worker
        handles an abandoned job even when several notice it; the timer-based
        death penalty because signals only work in the main thread.
        """
        for queue in self.queues:
            if not queue.acquire_maintenance_lock():
                continue
            try:
                StartedJobRegistry(queue.name, connection=self.connection,
                                   job_class=self.job_class, serializer=self.serializer,
                                   death_penalty_class=TimerDeathPenalty).cleanup()
            finally:
                queue.release_maintenance_lock()

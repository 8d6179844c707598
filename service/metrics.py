"""GET /metrics: the whole service's Prometheus metrics, computed at scrape time.

Three sources, read when Prometheus scrapes (nothing is counted in the API
process, so API restarts and API replicas lose nothing and disagree on
nothing):

- the store: jobs by teacher and state (the API's view, :func:`service.views.job_status`,
  without asking RQ per job: a job requeued after its worker died counts as running);
- Redis: queue depth and live workers per teacher, what the workers pushed when their
  jobs finished (:mod:`jobs.metrics`: why they push rather than serve a port), and what
  the API's Label Studio deliveries pushed;
- the API process itself (``process_*``, ``python_*``).

No API key: the endpoint is for Prometheus on the internal network (compose's
``monitoring`` profile) and shows counts, teacher and category names, never job
content or owners. Keep it off the public side of a reverse proxy.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from jobs import queueing
from jobs.metrics import DELIVERY_FAILURES, read_metrics
from jobs.records import JobStatus
from jobs.store import DamagedRecordError, JobStore
from service.deps import RedisDep, RegistryDep, SettingsDep, StoreDep
from service.views import job_status

log = logging.getLogger(__name__)
router = APIRouter(tags=["monitoring"])
UNNAMED = "unnamed"  # the teacher of a job recorded before teachers had names

# name -> (type, help, labels): the one list of what /metrics exports.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "distill_jobs": ("gauge", "Stored jobs by teacher and state", ("teacher", "state")),
    "distill_images_annotated": ("counter", "Images annotated by finished jobs",
                                 ("teacher",)),
    "distill_images_failed": ("counter", "Images that finished jobs could not annotate",
                              ("teacher",)),
    "distill_image_seconds": ("histogram", "Worker seconds per image, by teacher and "
                              "transform preset", ("teacher", "tta")),
    "distill_queue_depth": ("gauge", "Jobs waiting in the teacher's queue", ("teacher",)),
    "distill_live_workers": ("gauge", "Workers of the teacher with a current heartbeat",
                             ("teacher",)),
    "distill_last_job_pseudo_labels": ("gauge", "Pseudo-labels kept per category by the "
                                       "teacher's last finished job", ("teacher", "category")),
    "distill_last_job_threshold": ("gauge", "Thresholds of the teacher's last finished job "
                                   "(kind score or keypoint; +Inf: the category keeps nothing)",
                                   ("teacher", "category", "kind")),
    "distill_last_job_finished_timestamp_seconds": ("gauge", "When the teacher's last job "
                                                    "finished (Unix time)", ("teacher",)),
    "distill_labelstudio_predictions_delivered": (
        "counter", "Label Studio predictions written through its API (POST /api/predictions) "
        "after /predict stopped waiting", ("teacher",)),
    "distill_labelstudio_delivery_failures": (
        "counter", "Label Studio predictions that could not be delivered, by reason (post, "
        "image, job, timeout, no_key)", ("teacher", "reason")),
    "distill_redis_up": ("gauge", "1 when Redis answered this scrape", ()),
}
_SUFFIXES = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def series_names() -> set[str]:
    """Every sample name /metrics may show for the service (dashboards query these)."""
    return {name + s for name, (kind, _, _) in FAMILIES.items() for s in _SUFFIXES[kind]}


_KINDS = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
          "histogram": HistogramMetricFamily}
_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily)


def _family(kind: type[_Family], name: str) -> _Family:
    """An empty family of FAMILIES[name], which must be of ``kind``."""
    declared, doc, labels = FAMILIES[name]
    assert _KINDS[declared] is kind, name
    return kind(name, doc, labels=list(labels))


def _gauge(name: str) -> GaugeMetricFamily:
    return _family(GaugeMetricFamily, name)


def _counter(name: str) -> CounterMetricFamily:
    return _family(CounterMetricFamily, name)


def _histogram(name: str) -> HistogramMetricFamily:
    return _family(HistogramMetricFamily, name)


class JobStatusCounter:
    """Jobs by (teacher, status), one listing of the store per scrape.

    A job's files are read until it is terminal and then never again (a finished,
    failed or cancelled job does not change), so a scrape costs a listing plus the
    queued and running jobs, not every job kept for the retention period.
    """

    def __init__(self) -> None:
        self._terminal: dict[str, tuple[str, JobStatus]] = {}
        self._lock = threading.Lock()

    def count(self, store: JobStore) -> Counter[tuple[str, JobStatus]]:
        """Counts the stored jobs by teacher and status."""
        counts: Counter[tuple[str, JobStatus]] = Counter()
        with self._lock:
            seen: set[str] = set()
            for job_id in store.job_ids():  # staging and trash folders left out
                seen.add(job_id)
                known = self._terminal.get(job_id) or self._read(store, job_id)
                if known is not None:
                    counts[known] += 1
            for gone in self._terminal.keys() - seen:
                del self._terminal[gone]
        return counts

    def _read(self, store: JobStore, job_id: str) -> tuple[str, JobStatus] | None:
        try:
            record = store.load_job(job_id)
            state = store.load_state(job_id) if record is not None else None
        except DamagedRecordError:  # a damaged file: logged by the store, must not fail a scrape
            return None
        if record is None:
            return None  # deleted since the listing
        known = (record.teacher or UNNAMED, job_status(record, state, None))
        if known[1].is_terminal:
            self._terminal[job_id] = known
        return known


class ServiceCollector(Collector):
    """Reads the store, the queues and the workers' pushed metrics on every scrape."""

    def __init__(self, store: JobStore, redis: Redis, queue_prefix: str,
                 teachers: Callable[[], Iterable[str]]) -> None:
        self.store, self.redis, self.queue_prefix = store, redis, queue_prefix
        self.teachers = teachers
        self.jobs = JobStatusCounter()

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: registering must not scrape the store and Redis."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`FAMILIES`; the Redis ones only when Redis answers."""
        registered = sorted(self.teachers())
        counts = self.jobs.count(self.store)
        jobs = _gauge("distill_jobs")
        for teacher in sorted(set(registered) | {t for t, _ in counts}):
            for status in JobStatus:  # zeros too: a state's series does not vanish
                jobs.add_metric([teacher, status.value], counts.get((teacher, status), 0))
        yield jobs
        try:
            yield from self._from_redis(registered)
            up = 1
        except RedisError as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up = 0
        redis_up = _gauge("distill_redis_up")
        redis_up.add_metric([], up)
        yield redis_up

    def _from_redis(self, registered: list[str]) -> Iterator[Metric]:
        # Everything is read before anything is yielded: a Redis error midway must not
        # leave a scrape with half of the Redis families.
        pushed = read_metrics(self.redis, self.queue_prefix)
        depth, live = _gauge("distill_queue_depth"), _gauge("distill_live_workers")
        for teacher in registered:
            queue = queueing.queue_name(self.queue_prefix, teacher)
            depth.add_metric([teacher], Queue(queue, connection=self.redis).count)
            live.add_metric([teacher], len(queueing.live_workers(self.redis, queue)))
        annotated, failed = (_counter("distill_images_annotated"),
                             _counter("distill_images_failed"))
        for teacher, n in sorted(pushed.annotated.items()):
            annotated.add_metric([teacher], n)
        for teacher, n in sorted(pushed.failed.items()):
            failed.add_metric([teacher], n)
        seconds = _histogram("distill_image_seconds")
        for (teacher, tta), hist in sorted(pushed.image_seconds.items()):
            buckets = [(floatToGoString(le), float(n)) for le, n in hist.buckets.items()]
            seconds.add_metric([teacher, tta], [*buckets, ("+Inf", float(hist.count))],
                               hist.sum)
        kept, thresholds, finished = (_gauge("distill_last_job_pseudo_labels"),
                                      _gauge("distill_last_job_threshold"),
                                      _gauge("distill_last_job_finished_timestamp_seconds"))
        for teacher, last in sorted(pushed.last_jobs.items()):
            finished.add_metric([teacher], last.finished_at)
            for category, n in sorted(last.kept.items()):
                kept.add_metric([teacher, category], n)
            for kind, values in (("score", last.score_thresholds),
                                 ("keypoint", last.keypoint_thresholds)):
                for category, value in sorted(values.items()):
                    thresholds.add_metric([teacher, category, kind], value)
        delivered, undelivered = (_counter("distill_labelstudio_predictions_delivered"),
                                  _counter("distill_labelstudio_delivery_failures"))
        # Zeros for every registered teacher and reason: a rate over a series that appears
        # only with its first failure would miss that failure.
        for teacher in sorted(set(registered) | set(pushed.delivered)
                              | {t for t, _ in pushed.delivery_failures}):
            delivered.add_metric([teacher], pushed.delivered.get(teacher, 0))
            for reason in DELIVERY_FAILURES:
                undelivered.add_metric([teacher, reason],
                                       pushed.delivery_failures.get((teacher, reason), 0))
        yield from (depth, live, annotated, failed, seconds, kept, thresholds, finished,
                    delivered, undelivered)


_registry_lock = threading.Lock()


def _registry(request: Request, collector: Callable[[], ServiceCollector]) -> CollectorRegistry:
    """The app's registry, built on the first scrape (the store and Redis exist by then)."""
    with _registry_lock:
        registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
        if registry is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector())
            # The API process's own memory, CPU and GC, as prometheus_client measures them.
            for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(standard)
            request.app.state.metrics_registry = registry
        return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, settings: SettingsDep, store: StoreDep, redis: RedisDep,
            teachers: RegistryDep) -> Response:
    """Prometheus text format (0.0.4); no API key (internal network only)."""
    registry = _registry(request, lambda: ServiceCollector(store, redis, settings.queue,
                                                           teachers.names))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

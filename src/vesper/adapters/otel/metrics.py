"""Metrics with the OpenTelemetry SDK, exposed in Prometheus text format.

Counters and histograms are pushed by the use cases and the worker (the JobMetrics
port) and by the HTTP edge; queue depth and the fleet are observed from the store at
scrape time, cached for a second so that many scrapers cost one query; this process's
busy slots, database pools and LISTEN connection are observed from the objects that
own them. Every name follows Prometheus conventions once exported: the `vesper_`
prefix, base units (`_seconds`), `_total` on counters (the exporter adds the suffixes).

The per-job and per-request series are counted in plain Python and read at collection
time: an SDK instrument call costs about 5 us (attribute set, lock, aggregation), four
or five of them per job were a sixth of a busy worker's CPU, and a tally costs a tenth
of that. The counters are exported as observable counters of the same meter; the
histograms by a collector of their own on the same registry, in the exporter's exact
format (names, units, the otel_scope labels, cumulative buckets).

The job type is a label, and types are the user's: each one adds a series to every job
metric (3,000 types made a scrape of 42 MB). The first `max_types` types seen keep
their name; any later one is counted as `other`. A job pays one dict lookup for it.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from vesper.application.ports import PoolFigures
from vesper.domain.fleet import Fleet
from vesper.domain.job import JobRecord
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats

T = TypeVar("T")

SECONDS_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_TYPES = "other"  # the type label of the types past max_types


class _Cached:
    """The result of `load`, reused for `ttl` seconds; None while the store fails."""

    def __init__(self, load: Callable[[], T], ttl: float) -> None:
        self._load = load
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: object = None
        self._at = -1e9

    def get(self) -> object:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                try:
                    self._value = self._load()
                except Exception:
                    self._value = None  # a scrape while the store is down shows no depth
                self._at = time.monotonic()
            return self._value


Key = tuple[str, ...]


class _Tally:
    """Counts by label values, read by an observable counter when metrics are collected."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._counts: dict[Key, float] = {}
        self._lock = threading.Lock()

    def add(self, key: Key, amount: float = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        for key, value in counts:
            # strict=False: the empty key is the unlabelled series that starts at 0
            yield Observation(value, dict(zip(self._names, key, strict=False)))


# what the OpenTelemetry exporter adds to every series of the "vesper" meter
_SCOPE = {"otel_scope_name": "vesper", "otel_scope_schema_url": "", "otel_scope_version": ""}


class _Histogram:
    """A cumulative histogram by label values, collected from the Prometheus registry."""

    def __init__(
        self, name: str, description: str, names: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self._name = name
        self._description = description
        self._names = tuple(names)
        self._label_keys = sorted([*_SCOPE, *self._names])
        self._bounds = tuple(bounds)
        self._series: dict[Key, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def record(self, key: Key, value: float) -> None:
        # an upper bound is inclusive, as in OpenTelemetry's explicit-bucket aggregation
        index = bisect_left(self._bounds, value)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = ([0] * (len(self._bounds) + 1), [0.0])
            series[0][index] += 1
            series[1][0] += value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = [
                (key, list(counts), total[0]) for key, (counts, total) in self._series.items()
            ]
        if not series:
            return
        family = HistogramMetricFamily(
            self._name, self._description, labels=self._label_keys, unit="seconds"
        )
        for key, counts, total in series:
            labels = {**_SCOPE, **dict(zip(self._names, key, strict=True))}
            buckets, running = [], 0
            for bound, count in zip((*self._bounds, "+Inf"), counts, strict=True):
                running += count
                buckets.append((f"{bound}", running))
            family.add_metric(
                [labels[k] for k in self._label_keys], buckets=buckets, sum_value=total
            )
        yield family


class OtelMetrics:
    """The JobMetrics port on an OpenTelemetry meter with a Prometheus reader."""

    def __init__(self, service_name: str = "vesper", *, max_types: int = 100) -> None:
        self._max_types = max_types
        self._type_labels: dict[str, str] = {}  # the admitted types, each its own label
        self._types_full = max_types == 0  # set once: from then on a new type is "other"
        self._types_lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": service_name}),
            shutdown_on_exit=False,  # the container shuts it down, once
        )
        meter = self.provider.get_meter("vesper")
        job = ("type", "priority")
        self._enqueued = self._tally(meter, "vesper_jobs_enqueued", "Jobs created", job)
        self._started = self._tally(meter, "vesper_jobs_started", "Attempts started", job)
        self._succeeded = self._tally(
            meter, "vesper_jobs_succeeded", "Attempts that succeeded (job done)", job
        )
        self._failed = self._tally(
            meter, "vesper_jobs_failed", "Attempts that failed (retried or dead-lettered)", job
        )
        self._retried = self._tally(
            meter, "vesper_jobs_retried", "Failed attempts that scheduled a retry", job
        )
        self._dead = self._tally(meter, "vesper_jobs_dead_lettered", "Jobs moved to dlq", job)
        self._cancelled = self._tally(meter, "vesper_jobs_cancelled", "Jobs cancelled", job)
        self._abandoned = self._tally(
            meter,
            "vesper_jobs_abandoned",
            "Attempts stopped without a recorded result (lease lost, shutdown)",
            (*job, "reason"),
        )
        self._renewals = meter.create_counter(
            "vesper_lease_renewals", description="Leases renewed by heartbeats"
        )
        self._losses = meter.create_counter(
            "vesper_lease_losses", description="Leases found lost while their job ran"
        )
        self._reaped = meter.create_counter(
            "vesper_processes_reaped", description="Worker processes removed as dead"
        )
        self._pruned = meter.create_counter(
            "vesper_jobs_pruned", description="Finished jobs deleted by retention, by status"
        )
        self._wait = _Histogram(
            "vesper_job_queue_wait_seconds", "Time from run_at to the claim", job, SECONDS_BUCKETS
        )
        self._run = _Histogram(
            "vesper_job_run_time_seconds",
            "Time an attempt's consumer ran",
            (*job, "outcome"),
            SECONDS_BUCKETS,
        )
        self.registry.register(self._wait)
        self.registry.register(self._run)
        http = ("method", "route", "status")
        self._http_requests = self._tally(
            meter, "vesper_http_requests", "HTTP requests by method, route and status", http
        )
        self._http_duration = _Histogram(
            "vesper_http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            http,
            HTTP_BUCKETS,
        )
        self.registry.register(self._http_duration)
        self._meter = meter
        # counters of rare events start at 0 (a series without labels), so that dashboards
        # and alerts see them before the first event
        for counter in (self._renewals, self._losses, self._reaped):
            counter.add(0)
        self._abandoned.add((), 0)
        self._busy_lock = threading.Lock()
        self._busy: list[Callable[[], int]] = []
        meter.create_observable_gauge(
            "vesper_worker_busy_slots",
            [self._observe_busy],
            description="Slots running a job in this process",
        )

    @staticmethod
    def _tally(meter: Meter, name: str, description: str, names: Sequence[str]) -> _Tally:
        tally = _Tally(names)
        meter.create_observable_counter(name, [tally.observe], description=description)
        return tally

    # -- the JobMetrics port ------------------------------------------------------------

    def _key(self, job: JobRecord) -> Key:
        return self._kind_key(job.type, job.priority)

    def _kind_key(self, job_type: str, priority: int) -> Key:
        label = self._type_labels.get(job_type)
        if label is None:
            label = OTHER_TYPES if self._types_full else self._admit(job_type)
        return (label, str(priority))

    def _admit(self, job_type: str) -> str:
        """A type seen for the first time: its own label while there is room."""
        with self._types_lock:  # two threads must not both take the last place
            if job_type in self._type_labels:
                return job_type
            if len(self._type_labels) >= self._max_types:
                self._types_full = True
                return OTHER_TYPES
            self._type_labels[job_type] = job_type
            return job_type

    def jobs_enqueued(self, jobs: Sequence[JobRecord]) -> None:
        for key, count in Counter(map(self._key, jobs)).items():  # a batch: few keys, one add each
            self._enqueued.add(key, count)

    def job_started(self, job: JobRecord, queue_wait_seconds: float) -> None:
        key = self._key(job)
        self._started.add(key)
        self._wait.record(key, max(queue_wait_seconds, 0.0))

    def job_finished(self, job: JobRecord, outcome: str, run_seconds: float) -> None:
        key = self._key(job)
        self._run.record((*key, outcome), max(run_seconds, 0.0))
        if outcome == "done":
            self._succeeded.add(key)
        elif outcome in {"failed", "dlq"}:
            self._failed.add(key)
            (self._retried if outcome == "failed" else self._dead).add(key)
        elif outcome == "cancelled":  # stopped on a cancel request
            self._cancelled.add(key)
        elif outcome != "snoozed":  # a snooze is neither an end nor a loss
            self._abandoned.add((*key, outcome))

    def jobs_cancelled(self, jobs: Sequence[JobRecord]) -> None:
        for job in jobs:
            self._cancelled.add(self._key(job))

    def jobs_cancelled_by_kind(self, counts: Mapping[tuple[str, int], int]) -> None:
        for (job_type, priority), count in counts.items():
            self._cancelled.add(self._kind_key(job_type, priority), count)

    def leases_renewed(self, count: int) -> None:
        self._renewals.add(count)

    def leases_lost(self, count: int) -> None:
        self._losses.add(count)

    def processes_reaped(self, count: int) -> None:
        self._reaped.add(count)

    def jobs_pruned(self, counts: Mapping[Status, int]) -> None:
        for status, count in counts.items():
            self._pruned.add(count, {"status": status.value})

    # -- observed from the store --------------------------------------------------------

    def observe_queue(self, stats: Callable[[], QueueStats], ttl: float = 1.0) -> None:
        cached = _Cached(stats, ttl)

        def depth(_: CallbackOptions) -> Iterable[Observation]:
            value = cached.get()
            if isinstance(value, QueueStats):
                for (status, priority), count in value.counts.items():
                    yield Observation(count, {"status": status.value, "priority": str(priority)})

        def oldest(_: CallbackOptions) -> Iterable[Observation]:
            value = cached.get()
            if isinstance(value, QueueStats):
                yield Observation(value.oldest_due_age.total_seconds())

        self._meter.create_observable_gauge(
            "vesper_queue_depth", [depth], description="Jobs by status and priority"
        )
        self._meter.create_observable_gauge(
            "vesper_queue_oldest_due_age",
            [oldest],
            unit="s",
            description="How long the oldest due job has waited",
        )

    def observe_unserved(self, unserved: Callable[[], Mapping[str, int]], ttl: float = 5.0) -> None:
        """`vesper_queue_unserved_types{queue}`: how many types of due jobs no live
        process serves in each queue (queues past max_types count as "other")."""
        cached = _Cached(unserved, ttl)

        def count(_: CallbackOptions) -> Iterable[Observation]:
            value = cached.get()
            if not isinstance(value, Mapping):
                return
            by_label: Counter[str] = Counter()
            for index, (queue, n) in enumerate(sorted(value.items())):
                by_label[queue if index < max(self._max_types, 1) else OTHER_TYPES] += n
            for label, n in by_label.items():
                yield Observation(n, {"queue": label})

        self._meter.create_observable_gauge(
            "vesper_queue_unserved_types",
            [count],
            description="Types of due jobs that no live worker process serves, by queue",
        )

    def observe_fleet(self, fleet: Callable[[], Fleet], ttl: float = 1.0) -> None:
        cached = _Cached(fleet, ttl)

        def processes(_: CallbackOptions) -> Iterable[Observation]:
            value = cached.get()
            if isinstance(value, Fleet):
                yield Observation(len(value.processes))

        def slots(_: CallbackOptions) -> Iterable[Observation]:
            value = cached.get()
            if isinstance(value, Fleet):
                yield Observation(value.total_workers)

        self._meter.create_observable_gauge(
            "vesper_worker_processes", [processes], description="Live worker processes (fleet)"
        )
        self._meter.create_observable_gauge(
            "vesper_worker_slots", [slots], description="Job slots of live processes (fleet)"
        )

    def observe_busy_slots(self, busy: Callable[[], int]) -> Callable[[], None]:
        """Add a runner's busy-slot count to vesper_worker_busy_slots; returns the undo."""
        with self._busy_lock:
            self._busy.append(busy)

        def remove() -> None:
            with self._busy_lock:
                if busy in self._busy:
                    self._busy.remove(busy)

        return remove

    def _observe_busy(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._busy_lock:
            sources = list(self._busy)
        yield Observation(sum(source() for source in sources))

    def observe_pools(self, pools: Callable[[], Mapping[str, PoolFigures]]) -> None:
        """Connections of each database pool, by name (`main`, `beat`), at scrape time,
        as the store reports them (`pool_figures()`, application/ports.py)."""

        def read() -> Mapping[str, PoolFigures]:
            try:
                return pools()
            except Exception:
                return {}  # the store is not open, or not reachable: no pool to show

        def connections(_: CallbackOptions) -> Iterable[Observation]:
            for name, pool in read().items():
                yield Observation(pool.in_use, {"pool": name, "state": "in_use"})
                yield Observation(pool.idle, {"pool": name, "state": "idle"})

        def size(_: CallbackOptions) -> Iterable[Observation]:
            for name, pool in read().items():
                yield Observation(pool.size, {"pool": name})

        self._meter.create_observable_gauge(
            "vesper_db_pool_connections",
            [connections],
            description="Open connections of a database pool, in use or idle",
        )
        self._meter.create_observable_gauge(
            "vesper_db_pool_size",
            [size],
            description="Configured size of a database pool (overflow comes on top)",
        )

    def observe_listener(
        self, connected: Callable[[], bool], reconnects: Callable[[], int]
    ) -> None:
        """The store notifier's subscription (PostgreSQL: the LISTEN connection): up or
        down, and how often it reconnected."""

        def up(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(1 if connected() else 0)

        def again(_: CallbackOptions) -> Iterable[Observation]:
            yield Observation(reconnects())

        self._meter.create_observable_gauge(
            "vesper_listen_connected",
            [up],
            description="1 while the LISTEN connection for job notifications is up",
        )
        self._meter.create_observable_counter(
            "vesper_listen_reconnects",
            [again],
            description="Times the LISTEN connection was lost and opened again",
        )

    # -- the HTTP edge --------------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered; `route` is the path template (`/jobs/{job_id}`)."""
        key = (method, route, str(status))
        self._http_requests.add(key)
        self._http_duration.record(key, max(seconds, 0.0))

    # -- exposition ---------------------------------------------------------------------

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The Prometheus text (or OpenMetrics, if asked) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def shutdown(self) -> None:
        self.provider.shutdown()

"""Metrics with the OpenTelemetry SDK, exposed in Prometheus text format.

Counters and histograms are pushed by the use cases and the worker (the JobMetrics
port) and by the HTTP edge; queue depth and the fleet are observed from the store at
scrape time, cached for a second so that many scrapers cost one query; this process's
busy slots, database pools and LISTEN connection are observed from the objects that
own them. Every name follows Prometheus conventions once exported: the `vesper_`
prefix, base units (`_seconds`), `_total` on counters (the exporter adds the suffixes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from vesper.domain.fleet import Fleet
from vesper.domain.job import Job
from vesper.domain.stats import QueueStats

T = TypeVar("T")

SECONDS_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Pool(Protocol):
    """What is read of a connection pool (SQLAlchemy's QueuePool has these)."""

    def size(self) -> int: ...

    def checkedin(self) -> int: ...

    def checkedout(self) -> int: ...


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


class OtelMetrics:
    """The JobMetrics port on an OpenTelemetry meter with a Prometheus reader."""

    def __init__(self, service_name: str = "vesper") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": service_name}),
            shutdown_on_exit=False,  # the container shuts it down, once
        )
        meter = self.provider.get_meter("vesper")
        self._enqueued = meter.create_counter("vesper_jobs_enqueued", description="Jobs created")
        self._started = meter.create_counter("vesper_jobs_started", description="Attempts started")
        self._succeeded = meter.create_counter(
            "vesper_jobs_succeeded", description="Attempts that succeeded (job done)"
        )
        self._failed = meter.create_counter(
            "vesper_jobs_failed", description="Attempts that failed (retried or dead-lettered)"
        )
        self._retried = meter.create_counter(
            "vesper_jobs_retried", description="Failed attempts that scheduled a retry"
        )
        self._dead = meter.create_counter(
            "vesper_jobs_dead_lettered", description="Jobs moved to dlq"
        )
        self._cancelled = meter.create_counter(
            "vesper_jobs_cancelled", description="Jobs cancelled"
        )
        self._abandoned = meter.create_counter(
            "vesper_jobs_abandoned",
            description="Attempts stopped without a recorded result (lease lost, shutdown)",
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
        self._wait = meter.create_histogram(
            "vesper_job_queue_wait",
            unit="s",
            description="Time from run_at to the claim",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._run = meter.create_histogram(
            "vesper_job_run_time",
            unit="s",
            description="Time an attempt's consumer ran",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._http_requests = meter.create_counter(
            "vesper_http_requests", description="HTTP requests by method, route and status"
        )
        self._http_duration = meter.create_histogram(
            "vesper_http_request_duration",
            unit="s",
            description="HTTP request latency by method, route and status",
            explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
        )
        self._meter = meter
        # counters of rare events start at 0 (a series without labels), so that dashboards
        # and alerts see them before the first event
        for counter in (self._renewals, self._losses, self._reaped, self._abandoned):
            counter.add(0)
        self._busy_lock = threading.Lock()
        self._busy: list[Callable[[], int]] = []
        meter.create_observable_gauge(
            "vesper_worker_busy_slots",
            [self._observe_busy],
            description="Slots running a job in this process",
        )

    # -- the JobMetrics port ------------------------------------------------------------

    def jobs_enqueued(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._enqueued.add(1, _labels(job))

    def job_started(self, job: Job, queue_wait_seconds: float) -> None:
        labels = _labels(job)
        self._started.add(1, labels)
        self._wait.record(max(queue_wait_seconds, 0.0), labels)

    def job_finished(self, job: Job, outcome: str, run_seconds: float) -> None:
        labels = _labels(job)
        self._run.record(max(run_seconds, 0.0), {**labels, "outcome": outcome})
        if outcome == "done":
            self._succeeded.add(1, labels)
        elif outcome in {"failed", "dlq"}:
            self._failed.add(1, labels)
            (self._retried if outcome == "failed" else self._dead).add(1, labels)
        else:
            self._abandoned.add(1, {**labels, "reason": outcome})

    def jobs_cancelled(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._cancelled.add(1, _labels(job))

    def leases_renewed(self, count: int) -> None:
        self._renewals.add(count)

    def leases_lost(self, count: int) -> None:
        self._losses.add(count)

    def processes_reaped(self, count: int) -> None:
        self._reaped.add(count)

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

    def observe_pools(self, pools: Callable[[], Mapping[str, Pool]]) -> None:
        """Connections of each database pool, by name (`main`, `beat`), at scrape time."""

        def read() -> Mapping[str, Pool]:
            try:
                return pools()
            except Exception:
                return {}  # the store is not open, or not reachable: no pool to show

        def connections(_: CallbackOptions) -> Iterable[Observation]:
            for name, pool in read().items():
                yield Observation(pool.checkedout(), {"pool": name, "state": "in_use"})
                yield Observation(pool.checkedin(), {"pool": name, "state": "idle"})

        def size(_: CallbackOptions) -> Iterable[Observation]:
            for name, pool in read().items():
                yield Observation(pool.size(), {"pool": name})

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
        """The PostgreSQL LISTEN connection: up or down, and how often it reconnected."""

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
        labels = {"method": method, "route": route, "status": str(status)}
        self._http_requests.add(1, labels)
        self._http_duration.record(max(seconds, 0.0), labels)

    # -- exposition ---------------------------------------------------------------------

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The Prometheus text (or OpenMetrics, if asked) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def shutdown(self) -> None:
        self.provider.shutdown()


def _labels(job: Job) -> dict[str, str]:
    return {"type": job.type, "priority": str(job.priority)}

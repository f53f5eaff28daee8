"""The per-job series are tallied in plain Python (adapters/otel/metrics.py) for speed; their
exposition must stay what the OpenTelemetry SDK and its Prometheus exporter produce.
The reference here is the SDK itself, fed the same measurements."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.builders import make_job
from vesper.adapters.otel.metrics import HTTP_BUCKETS, SECONDS_BUCKETS, OtelMetrics

OUTCOMES = ["done", "failed", "dlq", "lease_lost", "abandoned"]
# bucket edges (inclusive upper bounds), their neighbours, negatives, zero and huge values
SECONDS = st.one_of(
    st.sampled_from([*SECONDS_BUCKETS, 0.0, -1.0, 1e9]),
    st.floats(min_value=-1, max_value=5000, allow_nan=False),
)
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["email", "resize image", 'quote"d']),
        st.integers(min_value=0, max_value=10),
        SECONDS,
        SECONDS,
        st.sampled_from(OUTCOMES),
        st.booleans(),
    ),
    max_size=40,
)


class Reference:
    """The same series, recorded through SDK instruments as vesper once did."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        provider = MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self.registry)],
            resource=Resource.create({"service.name": "vesper"}),
            shutdown_on_exit=False,
        )
        meter = provider.get_meter("vesper")
        counter = meter.create_counter
        self.enqueued = counter("vesper_jobs_enqueued", description="Jobs created")
        self.started = counter("vesper_jobs_started", description="Attempts started")
        self.succeeded = counter(
            "vesper_jobs_succeeded", description="Attempts that succeeded (job done)"
        )
        self.failed = counter(
            "vesper_jobs_failed", description="Attempts that failed (retried or dead-lettered)"
        )
        self.retried = counter(
            "vesper_jobs_retried", description="Failed attempts that scheduled a retry"
        )
        self.dead = counter("vesper_jobs_dead_lettered", description="Jobs moved to dlq")
        self.cancelled = counter("vesper_jobs_cancelled", description="Jobs cancelled")
        self.abandoned = counter(
            "vesper_jobs_abandoned",
            description="Attempts stopped without a recorded result (lease lost, shutdown)",
        )
        self.abandoned.add(0)
        histogram = meter.create_histogram
        self.wait = histogram(
            "vesper_job_queue_wait",
            unit="s",
            description="Time from run_at to the claim",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.run = histogram(
            "vesper_job_run_time",
            unit="s",
            description="Time an attempt's consumer ran",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.http_requests = counter(
            "vesper_http_requests", description="HTTP requests by method, route and status"
        )
        self.http_duration = histogram(
            "vesper_http_request_duration",
            unit="s",
            description="HTTP request latency by method, route and status",
            explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
        )

    def feed(self, job_type: str, priority: int, wait: float, run: float, outcome: str) -> None:
        labels = {"type": job_type, "priority": str(priority)}
        self.enqueued.add(1, labels)
        self.started.add(1, labels)
        self.wait.record(max(wait, 0.0), labels)
        self.run.record(max(run, 0.0), {**labels, "outcome": outcome})
        if outcome == "done":
            self.succeeded.add(1, labels)
        elif outcome in {"failed", "dlq"}:
            self.failed.add(1, labels)
            (self.retried if outcome == "failed" else self.dead).add(1, labels)
        else:
            self.abandoned.add(1, {**labels, "reason": outcome})


JOB_SERIES = (
    "vesper_jobs_",
    "vesper_job_queue_wait",
    "vesper_job_run_time",
    "vesper_http_request",
)
HTTP_SECONDS = st.one_of(
    st.sampled_from([*HTTP_BUCKETS, 0.0, -1.0, 1e9]),
    st.floats(min_value=-1, max_value=60, allow_nan=False),
)
REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(["GET", "POST"]),
        st.sampled_from(["/jobs", "/jobs/{job_id}", "unmatched"]),
        st.sampled_from([200, 201, 404, 503]),
        HTTP_SECONDS,
    ),
    max_size=30,
)


def samples(text: str) -> set[tuple[Any, ...]]:
    found: set[tuple[Any, ...]] = set()
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(JOB_SERIES):
            continue
        found.add(("family", family.name, family.type, family.documentation, family.unit))
        for sample in family.samples:
            found.add((sample.name, tuple(sorted(sample.labels.items())), sample.value))
    return found


@settings(max_examples=60, deadline=None)
@given(EVENTS, REQUESTS)
def test_per_job_and_http_series_are_exposed_exactly_as_the_sdk_would(
    events: list[Any], requests: list[Any]
) -> None:
    metrics = OtelMetrics()
    reference = Reference()
    for method, route, status, seconds in requests:
        metrics.http_request(method, route, status, seconds)
        labels = {"method": method, "route": route, "status": str(status)}
        reference.http_requests.add(1, labels)
        reference.http_duration.record(max(seconds, 0.0), labels)
    for job_type, priority, wait, run, outcome, cancelled in events:
        job = make_job(type=job_type, priority=priority)
        metrics.jobs_enqueued([job])
        metrics.job_started(job, wait)
        metrics.job_finished(job, outcome, run)
        reference.feed(job_type, priority, wait, run, outcome)
        if cancelled:
            metrics.jobs_cancelled([job])
            reference.cancelled.add(1, {"type": job_type, "priority": str(priority)})
    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        ours = samples(metrics.exposition(accept)[0].decode())
        if accept:
            from prometheus_client.openmetrics.exposition import (  # noqa: PLC0415
                generate_latest as generate_openmetrics,
            )

            theirs_text = generate_openmetrics(reference.registry).decode()
        else:
            theirs_text = generate_latest(reference.registry).decode()
        theirs = samples(theirs_text)
        assert ours == theirs, (sorted(ours - theirs)[:5], sorted(theirs - ours)[:5])
    metrics.shutdown()


def test_rare_counters_show_a_zero_series_before_the_first_event() -> None:
    metrics = OtelMetrics()
    text = metrics.exposition(None)[0].decode()
    zero = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "vesper_jobs_abandoned_total"
    ]
    assert [s.value for s in zero] == [0.0]
    metrics.shutdown()

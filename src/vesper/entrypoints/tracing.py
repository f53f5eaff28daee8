"""Traces: the tracer provider chosen by the standard OTEL_* variables, the W3C
traceparent that travels with a job, and the spans of a job's wait and execution.

`OTEL_TRACES_EXPORTER` (comma-separated) picks the exporters: `none` (the default:
nothing is recorded), `console` (spans as JSON on stdout, for development), `otlp`
(needs the optional package opentelemetry-exporter-otlp-proto-http, or -grpc with
`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`; endpoint and headers from the usual
`OTEL_EXPORTER_OTLP_*` variables), or the name of any installed exporter registered
under the entry-point group `opentelemetry_traces_exporter`. `OTEL_SERVICE_NAME`
(default `vesper`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`
work as everywhere else.

The HTTP span of `POST /jobs` is stored with the job as a traceparent; the worker
that runs the job opens its `process <type>` span as a child of it, after a `wait
<type>` span that covers the time in the queue, so that one trace shows
submit -> wait -> run.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from vesper.domain.job import JobRecord


class TracingConfigError(ValueError):
    """An OTEL_* value that cannot be used; the message names the variable."""


PROPAGATOR = TraceContextTextMapPropagator()
EXPORTER_GROUP = "opentelemetry_traces_exporter"
OTLP_PACKAGES = {
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "-grpc"),
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "-http"),
}


def tracer_provider_from_env(env: Mapping[str, str]) -> TracerProvider:
    """The provider that OTEL_TRACES_EXPORTER asks for; a no-op one for `none`.

    Raises:
        TracingConfigError: an unknown exporter, or one whose package is not installed.
    """
    raw = env.get("OTEL_TRACES_EXPORTER", "none")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if not names or names == ["none"]:
        return trace.NoOpTracerProvider()
    if "none" in names:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={raw!r}: `none` cannot be combined")
    exporters = [(name, _exporter(name, env)) for name in names]
    provider = SdkTracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "vesper"})
    )
    for name, exporter in exporters:
        # console is for people watching a terminal: print each span as it ends
        processor = SimpleSpanProcessor if name == "console" else BatchSpanProcessor
        provider.add_span_processor(processor(exporter))
    return provider


def open_tracer_provider() -> Iterator[TracerProvider]:
    """A container Resource: the provider from os.environ, flushed and shut down at exit."""
    provider = tracer_provider_from_env(os.environ)
    try:
        yield provider
    finally:
        if isinstance(provider, SdkTracerProvider):
            provider.shutdown()


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol not in OTLP_PACKAGES:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected grpc or http/protobuf"
            )
        module, suffix = OTLP_PACKAGES[protocol]
        try:
            exporter: SpanExporter = importlib.import_module(module).OTLPSpanExporter()
        except ImportError:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto{suffix}: "
                "pip install 'vesper-hivemind[otlp]'"
            ) from None
        return exporter
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (none, console, otlp, or an "
            f"installed package's name in the entry-point group {EXPORTER_GROUP})"
        )
    plugin: SpanExporter = next(iter(found)).load()()
    return plugin


# -- the traceparent that travels with a job ------------------------------------------


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span; None when no trace is being recorded."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote parent a stored traceparent names; None when it names none."""
    if not traceparent:
        return None
    context = PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The caller's trace context from HTTP headers (an empty one when it sent none)."""
    return PROPAGATOR.extract(headers)


# -- the spans of one job --------------------------------------------------------------


class JobSpan:
    """The `process <type>` span of one attempt; `finish` records how it ended."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def finish(self, outcome: str, error: str | None = None) -> None:
        self.span.set_attribute("vesper.job.outcome", outcome)
        if outcome == "done":
            self.span.set_status(Status(StatusCode.OK))
        else:
            self.span.set_status(Status(StatusCode.ERROR, error or outcome))

    @property
    def trace_id(self) -> str | None:
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None


@contextmanager
def job_span(tracer: Tracer, record: JobRecord, *, worker_id: str) -> Iterator[JobSpan]:
    """Spans for one attempt of `record`: its wait in the queue and its execution.

    Both are children of the submitting request's span when the job carries its
    traceparent; otherwise the execution starts a trace of its own.
    """
    parent = context_from_traceparent(record.trace_context)
    attributes: dict[str, Any] = {
        "messaging.system": "vesper",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.type,
        "messaging.message.id": str(record.id),
        "vesper.job.id": str(record.id),
        "vesper.job.type": record.type,
        "vesper.job.priority": record.priority,
        "vesper.job.attempt": record.attempts,
        "vesper.worker.id": worker_id,
    }
    if parent is not None and record.started_at is not None:
        # a first attempt waited since submission; a retry since its backoff ended
        since = record.created_at if record.attempts <= 1 else record.run_at
        started_ns = _ns(record.started_at.timestamp())
        since_ns = min(_ns(since.timestamp()), started_ns)  # clocks of two machines
        wait = tracer.start_span(
            f"wait {record.type}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={**attributes, "vesper.job.run_at": record.run_at.isoformat()},
            start_time=since_ns,
        )
        wait.end(end_time=started_ns)
    with tracer.start_as_current_span(
        f"process {record.type}",
        context=parent if parent is not None else Context(),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield JobSpan(span)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def install_global_tracer_provider(provider: TracerProvider) -> None:
    """Make `provider` the process's global one (once), so that the spans consumers
    open themselves, with `trace.get_tracer(...)`, are exported the same way."""
    if isinstance(provider, SdkTracerProvider) and isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    ):
        trace.set_tracer_provider(provider)

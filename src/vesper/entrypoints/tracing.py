"""Traces through the OpenTelemetry API: the W3C traceparent that travels with a job,
and the spans of a job's wait and execution. (The provider that records them, chosen by
the OTEL_* variables, is configured in adapters/otel/tracing.py.)

The HTTP span of `POST /jobs` is stored with the job as a traceparent; the worker
that runs the job opens its `process <type>` span as a child of it, after a `wait
<type>` span that covers the time in the queue, so that one trace shows
submit -> wait -> run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from vesper.domain.job import JobRecord

PROPAGATOR = TraceContextTextMapPropagator()


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


_NO_SPAN = JobSpan(INVALID_SPAN)


class _NoSpan:
    """The context of a job without spans: the same object for every such job."""

    def __enter__(self) -> JobSpan:
        return _NO_SPAN

    def __exit__(self, *_: object) -> None:
        return None


_NO_SPANS = _NoSpan()


def job_span(
    tracer: Tracer, record: JobRecord, *, worker_id: str
) -> AbstractContextManager[JobSpan]:
    """Spans for one attempt of `record`: its wait in the queue and its execution.

    Both are children of the submitting request's span when the job carries its
    traceparent; otherwise the execution starts a trace of its own. With tracing off
    (no provider) and no traceparent to pass on to the consumer's own spans, nothing is
    built: the attributes alone cost 3% of a worker's time in a drain.
    """
    if isinstance(tracer, NoOpTracer) and not record.trace_context:
        return _NO_SPANS
    return _spans(tracer, record, worker_id=worker_id)


@contextmanager
def _spans(tracer: Tracer, record: JobRecord, *, worker_id: str) -> Iterator[JobSpan]:
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

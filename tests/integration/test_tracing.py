"""One trace from POST /jobs to the job's execution: the request's span is stored with
the job (W3C traceparent) and the worker's spans are its children."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import UUID

import pytest
from dependency_injector import providers
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

import vesper
from vesper.adapters.otel.tracing import TracingConfigError, tracer_provider_from_env
from vesper.domain.job import JobId
from vesper.entrypoints.app import App
from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.service import build_runner
from vesper.entrypoints.tracing import context_from_traceparent

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def app(exporter: InMemorySpanExporter) -> Iterator[App]:
    application = App({"VESPER_STORAGE": "memory", "VESPER_POLL_INTERVAL": "50ms"})
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    application.container.tracer_provider.override(providers.Object(provider))

    @application.consumer("ok")
    def ok(job: vesper.Job) -> None:
        pass

    @application.consumer("boom")
    def boom(job: vesper.Job) -> None:
        raise ValueError("bad input")

    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(app.container, settings=app.settings)) as test_client:
        yield test_client


def run(app: App) -> None:
    asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 30))


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def test_one_trace_from_post_jobs_to_the_execution(
    app: App, client: TestClient[Litestar], exporter: InMemorySpanExporter
) -> None:
    response = client.post("/jobs", json={"type": "ok"})
    assert response.status_code == 201
    run(app)

    spans = exporter.get_finished_spans()
    (request,) = named(spans, "POST /jobs")
    (process,) = named(spans, "process ok")
    (wait,) = named(spans, "wait ok")
    assert request.kind is SpanKind.SERVER
    assert process.kind is SpanKind.CONSUMER
    assert trace_id(request) == trace_id(process) == trace_id(wait)
    assert request.context is not None
    assert process.parent is not None
    assert process.parent.span_id == request.context.span_id
    assert wait.parent is not None
    assert wait.parent.span_id == request.context.span_id
    assert process.attributes is not None
    assert process.attributes["vesper.job.id"] == response.json()["job_id"]
    assert process.attributes["vesper.job.outcome"] == "done"
    assert process.status.status_code is StatusCode.OK
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/jobs"
    assert request.attributes["http.response.status_code"] == 201
    # the wait lies between the submission and the execution
    assert wait.start_time is not None
    assert wait.end_time is not None
    assert process.start_time is not None
    assert request.start_time is not None
    assert request.start_time <= wait.start_time <= wait.end_time <= process.start_time


def test_the_stored_traceparent_names_the_request_span(
    app: App, client: TestClient[Litestar], exporter: InMemorySpanExporter
) -> None:
    job_id = client.post("/jobs", json={"type": "ok"}).json()["job_id"]
    stored = app.container.job_repository().get(JobId(UUID(job_id)))
    assert stored is not None
    (request,) = named(exporter.get_finished_spans(), "POST /jobs")
    assert request.context is not None
    request_ids = f"{request.context.trace_id:032x}-{request.context.span_id:016x}"
    assert stored.trace_context is not None
    version, ids, flags = (
        stored.trace_context[:2],
        stored.trace_context[3:-3],
        stored.trace_context[-2:],
    )
    assert (version, ids) == ("00", request_ids)
    assert int(flags, 16) & 1  # sampled
    # the wire format of a job does not show it
    assert "trace_context" not in client.get(f"/jobs/{job_id}").json()


def test_a_batch_and_a_failure_share_the_request_trace(
    app: App, client: TestClient[Litestar], exporter: InMemorySpanExporter
) -> None:
    body = {"jobs": [{"type": "ok"}, {"type": "boom", "max_retries": 0}]}
    assert client.post("/jobs/batch", json=body).status_code == 201
    run(app)
    spans = exporter.get_finished_spans()
    (request,) = named(spans, "POST /jobs/batch")
    (ok,) = named(spans, "process ok")
    (boom,) = named(spans, "process boom")
    assert trace_id(ok) == trace_id(boom) == trace_id(request)
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.status.description is not None
    assert "ValueError: bad input" in boom.status.description
    assert boom.attributes is not None
    assert boom.attributes["vesper.job.outcome"] == "dlq"


def test_the_callers_traceparent_is_continued(
    app: App, client: TestClient[Litestar], exporter: InMemorySpanExporter
) -> None:
    header = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
    assert client.post("/jobs", json={"type": "ok"}, headers={"traceparent": header}).is_success
    run(app)
    spans = exporter.get_finished_spans()
    (request,) = named(spans, "POST /jobs")
    (process,) = named(spans, "process ok")
    assert f"{trace_id(request):032x}" == f"{trace_id(process):032x}" == CLIENT_TRACE


def test_a_job_without_trace_context_starts_its_own_trace(
    app: App, exporter: InMemorySpanExporter
) -> None:
    app.enqueue("ok")  # from Python, outside any span
    run(app)
    spans = exporter.get_finished_spans()
    (process,) = named(spans, "process ok")
    assert process.parent is None
    assert not named(spans, "wait ok")


def test_404_and_unmatched_routes_get_a_span_too(
    client: TestClient[Litestar], exporter: InMemorySpanExporter
) -> None:
    assert client.get("/no/such/path").status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET unmatched"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404


def test_exporter_chosen_by_otel_traces_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(tracer_provider_from_env({}), NoOpTracerProvider)
    assert isinstance(
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "none"}), NoOpTracerProvider
    )
    console = tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(console, TracerProvider)
    console.shutdown()
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "carrier-pigeon"})
    with pytest.raises(TracingConfigError, match="cannot be combined"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "console,none"})
    with pytest.raises(TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracer_provider_from_env(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "smoke"}
        )


def test_otlp_without_its_package_names_what_to_install() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401, PLC0415
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP exporter is installed here")
    with pytest.raises(TracingConfigError, match=r"pip install 'vesper-hivemind\[otlp\]'"):
        tracer_provider_from_env({"OTEL_TRACES_EXPORTER": "otlp"})


@pytest.mark.parametrize("value", [None, "", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"])
def test_an_unusable_traceparent_names_no_parent(value: str | None) -> None:
    assert context_from_traceparent(value) is None


def test_with_tracing_off_the_callers_traceparent_still_reaches_the_job() -> None:
    """The API records no span of its own, but a worker that traces continues the
    caller's trace; a request without a traceparent stores none."""
    application = App({"VESPER_STORAGE": "memory"})  # OTEL_TRACES_EXPORTER unset: no-op
    header = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"
    try:
        with TestClient(create_app(application.container, settings=application.settings)) as c:
            traced = c.post("/jobs", json={"type": "ok"}, headers={"traceparent": header})
            plain = c.post("/jobs", json={"type": "ok"})
        jobs = application.container.job_repository()
        stored = jobs.get(JobId(UUID(traced.json()["job_id"]))).trace_context
        assert stored is not None
        assert stored.split("-")[1] == CLIENT_TRACE
        assert jobs.get(JobId(UUID(plain.json()["job_id"]))).trace_context is None
    finally:
        application.close()

"""The tracer provider, chosen by the standard OTEL_* variables.

`OTEL_TRACES_EXPORTER` (comma-separated) picks the exporters: `none` (the default:
nothing is recorded), `console` (spans as JSON on stdout, for development), `otlp`
(needs the optional package opentelemetry-exporter-otlp-proto-http, or -grpc with
`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`; endpoint and headers from the usual
`OTEL_EXPORTER_OTLP_*` variables), or the name of any installed exporter registered
under the entry-point group `opentelemetry_traces_exporter`. `OTEL_SERVICE_NAME`
(default `vesper`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`
work as everywhere else.

vesper's own spans (entrypoints/tracing.py, the HTTP edge) are recorded through the
OpenTelemetry API on the provider built here; `install_global_tracer_provider` makes
it the process's global one, for the spans consumers open themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import TracerProvider


class TracingConfigError(ValueError):
    """An OTEL_* value that cannot be used; the message names the variable."""


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


def open_tracer_provider(env: Mapping[str, str]) -> Iterator[TracerProvider]:
    """A container Resource: the provider `env` asks for, flushed and shut down at exit."""
    provider = tracer_provider_from_env(env)
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


def install_global_tracer_provider(provider: TracerProvider) -> None:
    """Make `provider` the process's global one (once), so that the spans consumers
    open themselves, with `trace.get_tracer(...)`, are exported the same way."""
    if isinstance(provider, SdkTracerProvider) and isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    ):
        trace.set_tracer_provider(provider)

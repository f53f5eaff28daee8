"""A span and two metrics per HTTP request: count and latency by method, route, status.

It wraps the whole Litestar handler (as Litestar's own OpenTelemetry plugin does), so
that 404s, 405s and 413s are counted too. The route label is Litestar's path template
(`/jobs/{job_id}`), never the raw path, so that ids do not explode the label set;
requests that match no route are `unmatched`. The span continues the caller's trace
when it sends a W3C `traceparent` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import NoOpTracer, SpanKind, Status, StatusCode, Tracer

from vesper.entrypoints.tracing import context_from_headers

Record = Callable[[str, str, int, float], None]  # method, route, status, seconds
ASGIApp = Callable[..., Any]


class HttpTelemetry:
    """An ASGI wrapper: `app.asgi_handler = HttpTelemetry(app.asgi_handler, ...)`."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer, record: Record) -> None:
        self.app = app
        self.tracer = tracer
        self.record = record
        # with tracing off, a span only matters to carry the caller's traceparent to the
        # job; the other requests skip it (a tenth of a small POST's CPU)
        self._tracing = not isinstance(tracer, NoOpTracer)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope.get("method", "GET")
        status = 500  # if no response starts at all, the client saw a failure

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if not self._tracing and not any(key == b"traceparent" for key, _ in scope["headers"]):
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.record(method, route, status, time.perf_counter() - started)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        with self.tracer.start_as_current_span(
            method,
            context=context_from_headers(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = scope.get("path_template") or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.record(method, route, status, time.perf_counter() - started)

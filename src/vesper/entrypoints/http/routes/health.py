"""Probes: /health (the process runs) and /ready (the store answers). Both are public.

Both answer HEAD as GET (load balancers probe with HEAD): the server sends the head of
the GET response, Content-Length included, without its body."""

from __future__ import annotations

import logging

import anyio
from litestar import HttpMethod, route
from litestar.di import NamedDependency

from vesper.domain.errors import SchemaNotMigrated, StoreUnavailable
from vesper.entrypoints.http.deps import ReadinessProbe, StoreCalls
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.schemas import StatusOut

log = logging.getLogger("vesper.http")

# /ready answers within this time whatever the store does.
READY_TIMEOUT_SECONDS = 5.0
PROBE_METHODS = [HttpMethod.GET, HttpMethod.HEAD]


@route("/health", http_method=PROBE_METHODS, opt={"public": True}, tags=["probes"])
async def health_route() -> StatusOut:
    """200 while the process runs; never touches the store."""
    return StatusOut(status="ok")


@route(
    "/ready",
    http_method=PROBE_METHODS,
    opt={"public": True},
    responses=error_responses(503),
    tags=["probes"],
)
async def ready_route(
    readiness_probe: NamedDependency[ReadinessProbe], store_calls: NamedDependency[StoreCalls]
) -> StatusOut:
    """200 when the store answers a query, 503 (with Retry-After) otherwise; the error
    names an unmigrated schema."""
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            await store_calls.run(readiness_probe)
    except SchemaNotMigrated:
        raise  # answers 503 with what to do, not "not answering"
    except Exception as exc:  # any failure means "not ready"; only its type is logged
        log.warning("not ready: the store probe failed with %s", type(exc).__name__)
        raise StoreUnavailable("the store did not answer the readiness probe") from None
    return StatusOut(status="ok")


HEALTH_ROUTES = [health_route, ready_route]

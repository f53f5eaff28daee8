"""Operator views: the worker fleet and the queue's counters."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency

from vesper.application.fleet import GetFleet
from vesper.application.management import GetStats
from vesper.entrypoints.http.deps import StoreCalls
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.schemas import FleetOut, StatsOut, fleet_out, stats_out


@get("/workers", responses=error_responses(401, 503), tags=["fleet"])
async def workers_route(
    get_fleet: NamedDependency[GetFleet], store_calls: NamedDependency[StoreCalls]
) -> FleetOut:
    """The live worker processes, grouped by machine.

    `total_workers` is the sum of the processes' concurrency; `machines` lists each
    machine with its process and worker counts.
    """
    return await store_calls.presented(fleet_out, get_fleet)


@get("/stats", responses=error_responses(401, 503), tags=["fleet"])
async def stats_route(
    get_stats: NamedDependency[GetStats], store_calls: NamedDependency[StoreCalls]
) -> StatsOut:
    """Job counts by status and by priority, the total, and the oldest due job's age."""
    return await store_calls.presented(stats_out, get_stats)


FLEET_ROUTES = [workers_route, stats_route]

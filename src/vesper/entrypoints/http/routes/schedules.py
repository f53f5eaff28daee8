"""Periodic schedules: list them, pause or resume one, delete one."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, patch
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from vesper.application.periodic import DeleteSchedule, ListSchedules, PauseSchedule
from vesper.entrypoints.http.body import StrictJSON, check_request_body
from vesper.entrypoints.http.deps import StoreCalls
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.schemas import (
    ScheduleOut,
    SchedulePatchIn,
    SchedulesOut,
    schedule_out,
    schedules_out,
)

NamePath = Annotated[str, PathParameter(description="The schedule's name.", min_length=1)]


@get("/schedules", responses=error_responses(401, 501, 503), tags=["schedules"])
async def list_schedules_route(
    list_schedules: NamedDependency[ListSchedules], store_calls: NamedDependency[StoreCalls]
) -> SchedulesOut:
    """Every periodic schedule the workers declared, by name, with its next tick (in
    the store's time), its last tick and that tick's job, whether it is paused, and
    whether it is stale (no process declared it lately)."""
    return await store_calls.presented(schedules_out, list_schedules)


@patch(
    "/schedules/{name:str}",
    dto=StrictJSON[SchedulePatchIn],
    return_dto=None,
    status_code=HTTP_200_OK,
    responses=error_responses(400, 401, 404, 415, 501, 503),
    tags=["schedules"],
)
async def patch_schedule_route(
    request: Request[Any, Any, Any],
    name: NamePath,
    data: JSONBody[SchedulePatchIn],
    pause_schedule: NamedDependency[PauseSchedule],
    store_calls: NamedDependency[StoreCalls],
) -> ScheduleOut:
    """`{"paused": true}` pauses the schedule: every worker reads it before each tick,
    so no new tick is submitted anywhere from the next one on. `false` resumes it."""
    await check_request_body(request)
    return await store_calls.presented(schedule_out, pause_schedule, name, data.paused)


@delete(
    "/schedules/{name:str}",
    status_code=HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 404, 501, 503),
    tags=["schedules"],
)
async def delete_schedule_route(
    name: NamePath,
    delete_schedule: NamedDependency[DeleteSchedule],
    store_calls: NamedDependency[StoreCalls],
) -> None:
    """Forget a schedule and its state (a stale one, removed from the code). A process
    that still declares it records it again within a heartbeat interval."""
    await store_calls.run(delete_schedule, name)


SCHEDULE_ROUTES = [list_schedules_route, patch_schedule_route, delete_schedule_route]

"""Queue routes: what each queue holds and who serves it; pause, resume and limits."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, patch
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from vesper.application.queues import ConfigureQueue, GetQueue, ListQueues
from vesper.domain.queues import QUEUE_PATTERN
from vesper.entrypoints.http.body import StrictJSON, check_request_body
from vesper.entrypoints.http.deps import StoreCalls
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.schemas import (
    QueueOut,
    QueuePatchIn,
    QueuesOut,
    queue_out,
    queues_out,
)

QueuePath = Annotated[
    str,
    PathParameter(
        description="The queue's name (1-64 of A-Z a-z 0-9 _ . -).",
        min_length=1,
        max_length=64,
        pattern=QUEUE_PATTERN,
    ),
]


@get("/queues", responses=error_responses(401, 503), tags=["queues"])
async def list_queues_route(
    list_queues: NamedDependency[ListQueues], store_calls: NamedDependency[StoreCalls]
) -> QueuesOut:
    """Every queue that holds jobs or settings: jobs by status, the oldest due job's age,
    the settings, and `unserved_types` (types of due jobs no live worker serves there)."""
    return await store_calls.presented(queues_out, list_queues)


@get("/queues/{name:str}", responses=error_responses(400, 401, 503), tags=["queues"])
async def get_queue_route(
    name: QueuePath,
    get_queue: NamedDependency[GetQueue],
    store_calls: NamedDependency[StoreCalls],
) -> QueueOut:
    """One queue (a name nothing uses yet is an empty queue with no settings)."""
    return await store_calls.presented(queue_out, get_queue, name)


@patch(
    "/queues/{name:str}",
    dto=StrictJSON[QueuePatchIn],
    return_dto=None,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    tags=["queues"],
)
async def patch_queue_route(
    request: Request[Any, Any, Any],
    name: QueuePath,
    data: JSONBody[QueuePatchIn],
    configure_queue: NamedDependency[ConfigureQueue],
    store_calls: NamedDependency[StoreCalls],
) -> QueueOut:
    """Change a queue's settings, fleet-wide: `paused`, `concurrency` (jobs processing
    at once), `rate` ("N/period": claims in any window of that period), `key_concurrency`
    (processing jobs per `concurrency_key`), `aging` (effective priority +1 per that
    long waited, at most 10). A field left out is unchanged; null clears it. Every
    worker applies the change at its next claim (a paused queue's jobs start nowhere
    once this returns)."""
    await check_request_body(request)
    return await store_calls.presented(queue_out, configure_queue, name, data.to_change())


QUEUE_ROUTES = [list_queues_route, get_queue_route, patch_queue_route]

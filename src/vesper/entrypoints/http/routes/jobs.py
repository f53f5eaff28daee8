"""Job routes: submit one or a batch, look one up, list, cancel, retry."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import attrs
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_422_UNPROCESSABLE_ENTITY,
)

from vesper.application.management import BulkJobs, CancelJob, GetJob, ListJobs, RetryJob
from vesper.application.ports import Submitted
from vesper.application.submit import SubmitJob, SubmitJobs
from vesper.domain.bulk import BulkAction
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId
from vesper.domain.query import MAX_PAGE, JobQuery
from vesper.domain.queues import QUEUE_PATTERN
from vesper.domain.states import Status
from vesper.entrypoints.http.body import StrictJSON, check_request_body
from vesper.entrypoints.http.deps import StoreCalls, Waits, blocking
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.schemas import (
    DOCUMENTED_LIMITS,
    NO_CONTROL_CHARACTERS,
    BulkCancelIn,
    BulkRetryIn,
    CountOut,
    JobOut,
    JobPageOut,
    JobsOut,
    SubmitBatchIn,
    SubmitJobIn,
    job_out,
    jobs_out,
    page_out,
)
from vesper.entrypoints.http.waiting import wait_seconds
from vesper.entrypoints.tracing import current_traceparent

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        description="Binds the job to this key: a replay with the same body returns it (200); "
        "another body is a 422. 1-255 printable ASCII characters.",
        min_length=1,
        max_length=DOCUMENTED_LIMITS.max_key_length,
        pattern=r"^[\x20-\x7e]+$",
    ),
]
WaitQuery = Annotated[
    str | None,
    QueryParameter(
        description="Wait up to this long (e.g. 30s, at most 60s) for the job to be done, "
        "dlq or cancelled; the answer is the job as it is then, 200 either way.",
        max_length=32,
    ),
]
JobIdPath = Annotated[UUID, PathParameter(description="The job's id (a UUID).", format="uuid")]
StatusQuery = Annotated[Status | None, QueryParameter(description="Only jobs in this status.")]
TypeQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only jobs of this type.",
        min_length=1,
        max_length=DOCUMENTED_LIMITS.max_type_length,
        pattern=NO_CONTROL_CHARACTERS,
    ),
]
# Bounds documented here, enforced by JobQuery (the domain owns them).
PriorityQuery = Annotated[
    int | None,
    QueryParameter(
        description="Only jobs of this priority (0-10).",
        schema_extra={"minimum": 0, "maximum": 10},
    ),
]
QueueQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only jobs of this queue.", min_length=1, max_length=64, pattern=QUEUE_PATTERN
    ),
]
LimitQuery = Annotated[
    int,
    QueryParameter(
        description=f"Page size, 1-{MAX_PAGE}.", schema_extra={"minimum": 1, "maximum": MAX_PAGE}
    ),
]
CursorQuery = Annotated[
    str | None,
    QueryParameter(
        description="The next_cursor of the previous page, as issued: it carries a "
        "checksum, and any other value is a 400.",
        schema_extra={"pattern": r"^s(0|[1-9][0-9]{0,18})\.[0-9a-f]{8}$"},
    ),
]


class BatchTooLarge(ClientException):
    """More jobs than Limits.max_batch: a semantic limit (the bytes have their own, 413)."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY


@post(
    "/jobs",
    dto=StrictJSON[SubmitJobIn],
    return_dto=None,
    status_code=HTTP_201_CREATED,
    responses={
        200: ResponseSpec(
            JobOut,
            description="An idempotent replay: the job this Idempotency-Key is bound to.",
            generate_examples=False,
        ),
        **error_responses(400, 401, 413, 415, 422, 503),
    },
    tags=["jobs"],
)
async def submit_job_route(
    request: Request[Any, Any, Any],
    data: JSONBody[SubmitJobIn],
    submit_job: NamedDependency[SubmitJob],
    store_calls: NamedDependency[StoreCalls],
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response[JobOut]:
    """Submit a job.

    The job is committed before the response: a 201 survives any crash. With an
    `Idempotency-Key`, submitting the same body again returns the original job with 200,
    even after it finished; another body with that key is a 422.
    """
    await check_request_body(request)
    if idempotency_key is not None and len(request.headers.getall("idempotency-key")) > 1:
        # Litestar reads the first: which key binds the job would be the client's guess
        raise InvalidRequest("Idempotency-Key", "must be given once")
    # the request's span travels with the job: its execution joins this trace
    job_request = attrs.evolve(
        data.to_request(idempotency_key=idempotency_key), trace_context=current_traceparent()
    )
    # the job joins the next group commit; it is validated where it is committed
    job, created = _job_and_created(await store_calls.submit(submit_job.steps(job_request)))
    return Response(job, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


@post(
    "/jobs/batch",
    dto=StrictJSON[SubmitBatchIn],
    return_dto=None,
    status_code=HTTP_201_CREATED,
    responses={
        200: ResponseSpec(
            JobsOut,
            description="Every job was an idempotent replay (keys per job).",
            generate_examples=False,
        ),
        **error_responses(400, 401, 413, 415, 422, 503),
    },
    tags=["jobs"],
)
async def submit_batch_route(
    request: Request[Any, Any, Any],
    data: JSONBody[SubmitBatchIn],
    submit_jobs: NamedDependency[SubmitJobs],
    store_calls: NamedDependency[StoreCalls],
) -> Response[JobsOut]:
    """Submit several jobs, all or nothing.

    Either every job is inserted, or none is and the error names the first bad one
    (`jobs[3].priority`). Idempotency keys go in each job's `idempotency_key` field.
    More jobs than the batch limit (1000 by default) is a 422; a body above
    VESPER_MAX_BODY is a 413 whatever it holds.
    """
    await check_request_body(request)
    if "idempotency-key" in request.headers:
        raise InvalidRequest(
            "Idempotency-Key", "is not accepted on a batch: give each job an idempotency_key"
        )
    max_batch = submit_jobs.settings.limits.max_batch
    if len(data.jobs) > max_batch:
        raise BatchTooLarge(
            detail=f"a batch holds at most {max_batch} jobs",
            extra={"field": "jobs", "max_items": max_batch},
        )
    traceparent = current_traceparent()
    requests = [attrs.evolve(r, trace_context=traceparent) for r in data.to_requests()]
    submitted = await store_calls.submit(submit_jobs.steps(requests))
    # up to max_batch jobs to present: in a thread, off the loop
    jobs, created = await blocking(_jobs_and_created, submitted)
    return Response(jobs, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


@get("/jobs/{job_id:str}", responses=error_responses(400, 401, 404, 503), tags=["jobs"])
async def get_job_route(
    job_id: JobIdPath,
    get_job: NamedDependency[GetJob],
    store_calls: NamedDependency[StoreCalls],
    waits: NamedDependency[Waits],
    wait: WaitQuery = None,
) -> JobOut:
    """Look up a job by id; with `wait`, once it has finished or the wait is over."""
    if wait is None:
        return await store_calls.presented(job_out, get_job, JobId(job_id))
    seconds = wait_seconds(wait)
    job, _ = await (await waits.get()).wait(JobId(job_id), seconds)
    # on the loop: a few fields' copy, cheaper than a thread hop per waiter when
    # hundreds are answered together (encoding the response is on the loop anyway)
    return job_out(job)


@get("/jobs", responses=error_responses(400, 401, 503), tags=["jobs"])
async def list_jobs_route(
    list_jobs: NamedDependency[ListJobs],
    store_calls: NamedDependency[StoreCalls],
    status: StatusQuery = None,
    type: TypeQuery = None,
    priority: PriorityQuery = None,
    queue: QueueQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> JobPageOut:
    """List jobs, newest first, with filters and cursor pagination.

    Pass the returned `next_cursor` as `cursor` for the next page; it is null on the
    last one. Every job appears once across the pages.
    """
    query = JobQuery(
        status=status, type=type, priority=priority, queue=queue, limit=limit, cursor=cursor
    )
    return await store_calls.presented(page_out, list_jobs, query)


@post(
    "/jobs/{job_id:str}/cancel",
    status_code=HTTP_200_OK,
    responses={
        202: ResponseSpec(
            JobOut,
            description="The job is running: its cancel is requested (cancel_requested_at), "
            "and its worker stops it at its next heartbeat.",
            generate_examples=False,
        ),
        **error_responses(400, 401, 404, 409, 503),
    },
    tags=["jobs"],
)
async def cancel_job_route(
    job_id: JobIdPath,
    cancel_job: NamedDependency[CancelJob],
    store_calls: NamedDependency[StoreCalls],
) -> Response[JobOut]:
    """Cancel a pending or failed job at once (200), or a processing one at its worker's
    next heartbeat (202; it ends cancelled, or done if it finished first). 409 in any
    other status."""
    job = await store_calls.presented(job_out, cancel_job, JobId(job_id))
    running = job.status == Status.PROCESSING.value
    return Response(job, status_code=HTTP_202_ACCEPTED if running else HTTP_200_OK)


@post(
    "/jobs/{job_id:str}/retry",
    status_code=HTTP_200_OK,
    responses=error_responses(400, 401, 404, 409, 503),
    tags=["jobs"],
)
async def retry_job_route(
    job_id: JobIdPath,
    retry_job: NamedDependency[RetryJob],
    store_calls: NamedDependency[StoreCalls],
) -> JobOut:
    """Send a dlq, failed or cancelled job back to pending, due now (409 otherwise, and
    when another active job holds its unique key: `detail.held_by` names it)."""
    return await store_calls.presented(job_out, retry_job, JobId(job_id))


@post(
    "/jobs/retry",
    dto=StrictJSON[BulkRetryIn],
    return_dto=None,
    status_code=HTTP_200_OK,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    tags=["jobs"],
)
async def bulk_retry_route(
    request: Request[Any, Any, Any],
    data: JSONBody[BulkRetryIn],
    bulk_jobs: NamedDependency[BulkJobs],
    store_calls: NamedDependency[StoreCalls],
) -> CountOut:
    """Retry every dlq, failed or cancelled job matching the filter (`status` narrows
    it); returns how many, and how many it skipped: finished jobs whose unique key an
    active job holds. Done in batches of short transactions."""
    await check_request_body(request)
    where = data.to_filter()
    done = await store_calls.run(bulk_jobs, BulkAction.RETRY, where)
    return CountOut(count=done.changed, skipped=done.skipped)


@post(
    "/jobs/cancel",
    dto=StrictJSON[BulkCancelIn],
    return_dto=None,
    status_code=HTTP_200_OK,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    tags=["jobs"],
)
async def bulk_cancel_route(
    request: Request[Any, Any, Any],
    data: JSONBody[BulkCancelIn],
    bulk_jobs: NamedDependency[BulkJobs],
    store_calls: NamedDependency[StoreCalls],
) -> CountOut:
    """Cancel every pending or failed job matching the filter; returns how many. Done in
    batches of short transactions; a running job is cancelled one at a time."""
    await check_request_body(request)
    where = data.to_filter()
    done = await store_calls.run(bulk_jobs, BulkAction.CANCEL, where)
    return CountOut(count=done.changed, skipped=done.skipped)


def _job_and_created(submitted: Submitted) -> tuple[JobOut, bool]:
    return job_out(submitted.job), submitted.created


def _jobs_and_created(submitted: list[Submitted]) -> tuple[JobsOut, bool]:
    return jobs_out([s.job for s in submitted]), any(s.created for s in submitted)


JOB_ROUTES = [
    submit_job_route,
    submit_batch_route,
    get_job_route,
    list_jobs_route,
    cancel_job_route,
    retry_job_route,
    bulk_retry_route,
    bulk_cancel_route,
]

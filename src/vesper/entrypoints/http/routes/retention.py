"""DELETE /jobs/{id}: remove a finished job before its retention ends."""

from __future__ import annotations

from litestar import delete
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from vesper.application.retention import DeleteJob
from vesper.domain.job import JobId
from vesper.entrypoints.http.deps import StoreCalls
from vesper.entrypoints.http.errors import error_responses
from vesper.entrypoints.http.routes.jobs import JobIdPath
from vesper.entrypoints.http.schemas import JobOut, job_out


@delete(
    "/jobs/{job_id:str}",
    status_code=HTTP_200_OK,
    responses=error_responses(400, 401, 404, 409, 503),
    tags=["jobs"],
)
async def delete_job_route(
    job_id: JobIdPath,
    delete_job: NamedDependency[DeleteJob],
    store_calls: NamedDependency[StoreCalls],
) -> JobOut:
    """Delete a done, dlq or cancelled job now (409 in any other status); returns the
    job as it was. Its idempotency key is free again."""
    return await store_calls.presented(job_out, delete_job, JobId(job_id))


RETENTION_ROUTES = [delete_job_route]

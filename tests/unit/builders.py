"""Small builders shared by the unit tests: a fixed epoch, jobs and requests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from vesper.domain.job import JobId, JobRecord, LeaseRef
from vesper.domain.submission import JobRequest, Limits, NewJob, prepare

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def new_id() -> JobId:
    return JobId(uuid.uuid4())


def make_job(**overrides: Any) -> JobRecord:
    """A pending job due at T0; any field can be overridden."""
    fields: dict[str, Any] = {
        "id": new_id(),
        "type": "email",
        "run_at": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    return JobRecord(**fields)


def claimed(
    job: JobRecord, *, now: datetime = T0, worker_id: str = "w1"
) -> tuple[JobRecord, LeaseRef]:
    """`job` claimed at `now`, with the ref its worker would hold."""
    token = uuid.uuid4()
    return job.claim(worker_id=worker_id, token=token, now=now, lease=LEASE), LeaseRef(
        job_id=job.id, token=token
    )


def new_job(request: JobRequest | None = None, **fields: Any) -> NewJob:
    """A validated NewJob, from `request` or from JobRequest(**fields)."""
    req = request if request is not None else JobRequest(**{"type": "email", **fields})
    return prepare(req, job_id=new_id(), limits=Limits(), default_max_retries=3)

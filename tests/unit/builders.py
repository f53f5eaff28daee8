"""Small builders shared by the unit tests: a fixed epoch, jobs and requests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from vesper.domain.job import JobId, JobRecord, Lease, LeaseRef
from vesper.domain.states import Status
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


_times = st.datetimes(timezones=st.just(UTC))
# any stored job: for the properties of its conversions (rows, wire, API)
job_records = st.builds(
    JobRecord,
    id=st.uuids().map(JobId),
    type=st.text(min_size=1, max_size=20),
    priority=st.integers(0, 10),
    payload=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)),
    status=st.sampled_from(Status),
    retries=st.integers(0, 5),
    attempts=st.integers(0, 9),
    max_retries=st.integers(0, 9),
    error=st.text(max_size=20),
    run_at=_times,
    idempotency_key=st.none() | st.text(min_size=1, max_size=10),
    fingerprint=st.text(max_size=10),
    timeout=st.none() | st.timedeltas(min_value=timedelta(microseconds=1)),
    trace_context=st.none() | st.text(max_size=10),
    lease=st.none()
    | st.builds(Lease, worker_id=st.text(max_size=10), token=st.uuids(), expires_at=_times),
    created_at=_times,
    updated_at=_times,
    started_at=st.none() | _times,
    finished_at=st.none() | _times,
    seq=st.integers(0, 10**9),
)

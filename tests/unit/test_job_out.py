"""The API's job, built field by field, is the job's wire form (`job_to_wire`) that the
CLI shares: any field added to one and not the other fails here."""

from __future__ import annotations

from datetime import UTC, timedelta

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from vesper.domain.job import JobId, JobRecord, Lease
from vesper.domain.states import Status
from vesper.entrypoints.http.schemas import JobOut, job_out
from vesper.entrypoints.wire import job_to_wire

_times = st.datetimes(timezones=st.just(UTC))
_jobs = st.builds(
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
    timeout=st.none() | st.timedeltas(min_value=timedelta(microseconds=1)),
    lease=st.none()
    | st.builds(Lease, worker_id=st.text(max_size=10), token=st.uuids(), expires_at=_times),
    created_at=_times,
    updated_at=_times,
    started_at=st.none() | _times,
    finished_at=st.none() | _times,
    seq=st.integers(0, 10**9),
)


@given(_jobs)
def test_job_out_is_the_jobs_wire_form(job: JobRecord) -> None:
    assert job_out(job) == msgspec.convert(job_to_wire(job), JobOut)
    assert msgspec.json.decode(msgspec.json.encode(job_out(job))).keys() == job_to_wire(job).keys()

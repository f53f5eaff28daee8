"""The SQL stores' one definition of a job row: tables.py's `jobs` columns, converted by
rows.py, inserted by the PostgreSQL statements built from the same lists."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from vesper.adapters.sql.postgres_statements import SUPPLIED
from vesper.adapters.sql.rows import LEASE_COLUMNS, job_of, row_of
from vesper.adapters.sql.tables import jobs
from vesper.domain.job import JobId, JobRecord, Lease
from vesper.domain.states import Status
from vesper.domain.submission import NewJob

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


def test_every_job_column_but_the_leases_is_the_job_record_field_of_its_name() -> None:
    columns = {column.name for column in jobs.c}
    fields = set(attrs.fields_dict(JobRecord))
    assert columns - set(LEASE_COLUMNS) == fields - {"lease"}


class _Reads(dict[str, Any]):
    """A row that remembers which columns were read."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__(row)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)


@given(_jobs.filter(lambda job: job.lease is not None))  # no token: the lease is not read
def test_job_of_reads_every_column(job: JobRecord) -> None:
    row = _Reads(row_of(job))
    job_of(row)
    assert row.read == {column.name for column in jobs.c}


@given(_jobs)
def test_a_job_comes_back_from_its_row_unchanged(job: JobRecord) -> None:
    row = row_of(job)
    assert set(row) == {column.name for column in jobs.c}
    assert job_of(row) == job


def test_a_submission_supplies_every_field_of_a_new_job() -> None:
    # payload_json is the payload's text: the INSERT sends it as `payload`
    assert set(SUPPLIED) == set(attrs.fields_dict(NewJob)) - {"payload_json"}

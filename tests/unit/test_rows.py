"""The SQL stores' one definition of a job row: tables.py's `jobs` columns, converted by
rows.py, inserted by the PostgreSQL statements built from the same lists."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given

from vesper.adapters.sql.postgres_statements import SUPPLIED
from vesper.adapters.sqlcore.rows import LEASE_COLUMNS, job_of, row_of
from vesper.adapters.sqlcore.tables import jobs
from vesper.domain.job import JobRecord
from vesper.domain.submission import NewJob

from .builders import job_records


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


@given(job_records.filter(lambda job: job.lease is not None))  # no token: the lease is not read
def test_job_of_reads_every_column(job: JobRecord) -> None:
    row = _Reads(row_of(job))
    job_of(row)
    assert row.read == {column.name for column in jobs.c}


@given(job_records)
def test_a_job_comes_back_from_its_row_unchanged(job: JobRecord) -> None:
    row = row_of(job)
    assert set(row) == {column.name for column in jobs.c}
    assert job_of(row) == job


def test_a_submission_supplies_every_field_of_a_new_job() -> None:
    # payload_json is the payload's text: the INSERT sends it as `payload`
    assert set(SUPPLIED) == set(attrs.fields_dict(NewJob)) - {"payload_json"}

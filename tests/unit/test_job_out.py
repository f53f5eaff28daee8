"""The API's job, built field by field, is the job's wire form (`job_to_wire`) that the
CLI shares: any field added to one and not the other fails here."""

from __future__ import annotations

import msgspec
from hypothesis import given

from vesper.domain.job import JobRecord
from vesper.entrypoints.http.schemas import JobOut, job_out
from vesper.entrypoints.wire import job_to_wire

from .builders import job_records


@given(job_records)
def test_job_out_is_the_jobs_wire_form(job: JobRecord) -> None:
    assert job_out(job) == msgspec.convert(job_to_wire(job), JobOut)
    assert msgspec.json.decode(msgspec.json.encode(job_out(job))).keys() == job_to_wire(job).keys()

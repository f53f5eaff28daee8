"""Rows <-> domain objects: the SQL stores' one cattrs converter and its hooks.

A job row is flat (`worker_id`, `lease_token`, `lease_expires_at`); the domain JobRecord holds
a `Lease` or None. The domain classes know nothing of rows: all of it is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import cattrs
from sqlalchemy.engine import Row

from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import JobId, JobRecord, Lease
from vesper.domain.ordering import claim_order
from vesper.domain.states import Status

_LEASE_COLUMNS = ("worker_id", "lease_token", "lease_expires_at")


def _uuid(value: Any, _: type) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def aware_utc(value: Any) -> datetime:
    """A stored time as aware UTC."""
    # psycopg hands back timestamptz in the session zone (UTC); the SQLite type attaches
    # UTC. Anything else (a naive value from a hand-written query) is read as UTC.
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _timedelta(value: Any, _: type) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(microseconds=int(value))


def _payload(value: Any, _: type) -> dict[str, Any]:
    # a fresh dict per job: a caller that mutates one must not change another's copy
    return dict(value)


row_converter = cattrs.Converter(detailed_validation=False)
row_converter.register_structure_hook(UUID, _uuid)
row_converter.register_structure_hook(datetime, lambda value, _: aware_utc(value))
row_converter.register_structure_hook(timedelta, _timedelta)
row_converter.register_structure_hook(Status, lambda value, _: Status(value))
row_converter.register_structure_hook_func(lambda cls: cls == Mapping[str, Any], _payload)
row_converter.register_unstructure_hook(UUID, lambda value: value)
row_converter.register_unstructure_hook(Status, lambda value: value.value)
row_converter.register_unstructure_hook(datetime, lambda value: value)
row_converter.register_unstructure_hook(timedelta, lambda value: value)


# looked up once: the converter's dispatch per row would be a tenth of a claim's cost
_structure_job = row_converter.get_structure_hook(JobRecord)
_structure_process = row_converter.get_structure_hook(WorkerProcess)


def job_of(row: Row[Any] | Mapping[str, Any]) -> JobRecord:
    """The job record a `vesper_jobs` row holds.

    Built field by field with the converter's own hooks: cattrs' generic structuring
    (a dict per row, a dispatch per field) cost more than the claim's SQL on a batch of
    50. The contract suite's exact round trips (aware datetimes, microseconds, leases,
    durations) hold it to the stored values; `structured_job_of` is the slow reference.
    """
    m: Any = row._mapping if isinstance(row, Row) else row
    token = m["lease_token"]
    started, finished, timeout = m["started_at"], m["finished_at"], m["timeout"]
    return JobRecord(
        id=JobId(_uuid(m["id"], UUID)),
        type=m["type"],
        priority=m["priority"],
        payload=dict(m["payload"]),  # a fresh dict per job
        status=Status(m["status"]),
        retries=m["retries"],
        attempts=m["attempts"],
        max_retries=m["max_retries"],
        error=m["error"],
        run_at=aware_utc(m["run_at"]),
        idempotency_key=m["idempotency_key"],
        fingerprint=m["fingerprint"],
        timeout=None if timeout is None else _timedelta(timeout, timedelta),
        trace_context=m["trace_context"],
        lease=None
        if token is None
        else Lease(
            worker_id=m["worker_id"],
            token=_uuid(token, UUID),
            expires_at=aware_utc(m["lease_expires_at"]),
        ),
        created_at=aware_utc(m["created_at"]),
        updated_at=aware_utc(m["updated_at"]),
        started_at=None if started is None else aware_utc(started),
        finished_at=None if finished is None else aware_utc(finished),
        seq=m["seq"],
    )


def structured_job_of(row: Row[Any] | Mapping[str, Any]) -> JobRecord:
    """`job_of` through the cattrs converter: the reference the fast path is tested against."""
    fields = dict(row._mapping if isinstance(row, Row) else row)
    worker_id, token, expires_at = (fields.pop(name) for name in _LEASE_COLUMNS)
    fields["lease"] = (
        None
        if token is None
        else {"worker_id": worker_id, "token": token, "expires_at": expires_at}
    )
    job: JobRecord = _structure_job(fields, JobRecord)
    return job


def jobs_of(rows: Iterable[Row[Any] | Mapping[str, Any]]) -> list[JobRecord]:
    return [job_of(row) for row in rows]


def row_of(job: JobRecord) -> dict[str, Any]:
    """The `vesper_jobs` row of `job`: every column, the lease flattened."""
    fields: dict[str, Any] = row_converter.unstructure(job)
    lease = fields.pop("lease")
    fields["worker_id"] = lease["worker_id"] if lease else None
    fields["lease_token"] = lease["token"] if lease else None
    fields["lease_expires_at"] = lease["expires_at"] if lease else None
    return fields


def process_of(row: Row[Any]) -> WorkerProcess:
    """The WorkerProcess a `vesper_workers` row holds."""
    process: WorkerProcess = _structure_process(dict(row._mapping), WorkerProcess)
    return process


def in_claim_order(jobs: Iterable[JobRecord]) -> list[JobRecord]:
    """UPDATE ... RETURNING does not keep the ORDER BY of its subquery: sort again."""
    return sorted(jobs, key=claim_order)


def in_order_of(jobs: Iterable[JobRecord], ids: Iterable[UUID]) -> list[JobRecord]:
    """`jobs` in the order their ids first appear in `ids` (the caller's order)."""
    by_id = {job.id: job for job in jobs}
    ordered: list[JobRecord] = []
    for job_id in ids:
        job = by_id.pop(job_id, None)  # type: ignore[call-overload]
        if job is not None:
            ordered.append(job)
    return ordered

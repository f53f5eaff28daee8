"""Rows <-> domain objects: the SQL stores' one conversion of each table's rows.

A job row is flat (`worker_id`, `lease_token`, `lease_expires_at`); the domain JobRecord
holds a `Lease` or None. Every other column of tables.py's `jobs` is the JobRecord field
of the same name, so the column list is the table's: a new job column is its definition
there and its line in `job_of` (tests/unit/test_rows.py holds the two, and JobRecord, to
the same names). The domain classes know nothing of rows: all of it is here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.engine import Row

from vesper.adapters.sqlcore.tables import jobs
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import JobId, JobRecord, Lease
from vesper.domain.ordering import claim_order
from vesper.domain.queues import QueueSettings, Rate
from vesper.domain.states import Status

LEASE_COLUMNS = ("worker_id", "lease_token", "lease_expires_at")


def _uuid(value: Any) -> UUID:
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


def _timedelta(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(microseconds=int(value))


# every job column but the lease's, in the table's order
_JOB_COLUMNS = tuple(column.name for column in jobs.c if column.name not in LEASE_COLUMNS)


def job_of(row: Row[Any] | Mapping[str, Any]) -> JobRecord:
    """The job record a `vesper_jobs` row holds: the one conversion of a stored job.

    Written out field by field, in JobRecord's order (CPython matches keywords given in
    the parameters' order at half the cost): a loop over the columns with a converter
    each cost 1.2 us more a row (5.3 against 4.1 us), and cattrs' generic structuring
    7.2 us, more than the claim's SQL on a batch of 50. tests/unit/test_rows.py holds it
    to every column; the contract suite's exact round trips (aware datetimes,
    microseconds, leases, durations) to the stored values.
    """
    m: Any = row._mapping if isinstance(row, Row) else row
    token = m["lease_token"]
    started, finished, timeout = m["started_at"], m["finished_at"], m["timeout"]
    cancel_requested = m["cancel_requested_at"]
    return JobRecord(
        id=JobId(_uuid(m["id"])),
        type=m["type"],
        queue=m["queue"],
        priority=m["priority"],
        payload=dict(m["payload"]),  # a fresh dict per job: callers may mutate theirs
        status=Status(m["status"]),
        retries=m["retries"],
        attempts=m["attempts"],
        max_retries=m["max_retries"],
        error=m["error"],
        run_at=aware_utc(m["run_at"]),
        idempotency_key=m["idempotency_key"],
        concurrency_key=m["concurrency_key"],
        fingerprint=m["fingerprint"],
        timeout=None if timeout is None else _timedelta(timeout),
        trace_context=m["trace_context"],
        lease=None
        if token is None
        else Lease(
            worker_id=m["worker_id"],
            token=_uuid(token),
            expires_at=aware_utc(m["lease_expires_at"]),
        ),
        created_at=aware_utc(m["created_at"]),
        updated_at=aware_utc(m["updated_at"]),
        started_at=None if started is None else aware_utc(started),
        finished_at=None if finished is None else aware_utc(finished),
        seq=m["seq"],
        result=m["result"],  # decoded JSON (the column's type, or psycopg's json loader)
        cancel_requested_at=None if cancel_requested is None else aware_utc(cancel_requested),
        snoozes=m["snoozes"],
        unique_key=m["unique_key"],
    )


def jobs_of(rows: Iterable[Row[Any] | Mapping[str, Any]]) -> list[JobRecord]:
    return [job_of(row) for row in rows]


def row_of(job: JobRecord) -> dict[str, Any]:
    """The `vesper_jobs` row of `job`: every column, the lease flattened."""
    row = {name: getattr(job, name) for name in _JOB_COLUMNS}
    row["status"] = job.status.value
    lease = job.lease
    row["worker_id"] = lease.worker_id if lease else None
    row["lease_token"] = lease.token if lease else None
    row["lease_expires_at"] = lease.expires_at if lease else None
    return row


def process_of(row: Row[Any]) -> WorkerProcess:
    """The WorkerProcess a `vesper_workers` row holds."""
    m = row._mapping
    return WorkerProcess(
        id=m["id"],
        machine=m["machine"],
        pid=m["pid"],
        concurrency=m["concurrency"],
        started_at=aware_utc(m["started_at"]),
        last_heartbeat=aware_utc(m["last_heartbeat"]),
        queues=None if m["queues"] is None else json.loads(m["queues"]),
        types=None if m["types"] is None else tuple(json.loads(m["types"])),
    )


def process_columns(process: WorkerProcess) -> tuple[str | None, str | None]:
    """The `queues` and `types` columns of a process's row (JSON text, or NULL)."""
    queues = None if process.queues is None else json.dumps(dict(process.queues))
    types = None if process.types is None else json.dumps(list(process.types))
    return queues, types


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def queue_settings_of(row: Row[Any] | Mapping[str, Any]) -> QueueSettings:
    """The QueueSettings a `vesper_queues` row holds."""
    m: Any = row._mapping if isinstance(row, Row) else row
    limit, period, aging = m["rate_limit"], m["rate_period"], m["aging"]
    return QueueSettings(
        name=m["name"],
        paused=bool(m["paused"]),
        concurrency=m["concurrency"],
        rate=None if limit is None else Rate(limit=limit, period=_timedelta(period)),
        key_concurrency=m["key_concurrency"],
        aging=None if aging is None else _timedelta(aging),
    )


def queue_row(settings: QueueSettings) -> dict[str, Any]:
    """The settings columns of a `vesper_queues` row (not rate_log nor updated_at)."""
    rate = settings.rate
    return {
        "name": settings.name,
        "paused": settings.paused,
        "concurrency": settings.concurrency,
        "rate_limit": rate.limit if rate is not None else None,
        "rate_period": rate.period if rate is not None else None,
        "key_concurrency": settings.key_concurrency,
        "aging": settings.aging,
    }


def rate_log_of(text: str) -> list[datetime]:
    """The claim times of a rate's window, from their JSON microseconds."""
    return [_EPOCH + timedelta(microseconds=us) for us in json.loads(text)]


def rate_log_text(log: Iterable[datetime]) -> str:
    return json.dumps([(moment - _EPOCH) // timedelta(microseconds=1) for moment in log])


def in_claim_order(jobs: Iterable[JobRecord]) -> list[JobRecord]:
    """UPDATE ... RETURNING does not keep the ORDER BY of its subquery: sort again."""
    return sorted(jobs, key=claim_order)

"""The fenced updates of a SQL store whose clock is bound as a parameter (`now`):
complete, release, renew, fail, snooze and expire, on the shared `jobs` table.

Portable SQLAlchemy Core (UPDATE ... RETURNING): SQLite, PostgreSQL, and any database
with RETURNING on UPDATE. A lease changes a job only while it is current: the job is
processing, holds that token, and its lease has not expired by `now`. A job with a
cancel request ends cancelled at whatever ends its attempt (renew included), but a
completion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Text, and_, bindparam, case, null, or_, text, tuple_, update
from sqlalchemy.engine import Connection

from vesper.adapters.sqlcore.common import Database
from vesper.adapters.sqlcore.rows import job_of, jobs_of
from vesper.adapters.sqlcore.tables import PROCESSING_SQL, jobs, utc_datetime
from vesper.domain.job import LEASE_EXPIRED_ERROR, Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.states import Status

NOW = bindparam("now", type_=utc_datetime())
_LEASE_CLEARED: dict[str, Any] = {"worker_id": None, "lease_token": None, "lease_expires_at": None}

# fencing: only the current, unexpired lease of a processing job changes it
_FENCE = and_(
    jobs.c.id.in_(bindparam("ids", expanding=True)),  # leads the planner to the primary key
    tuple_(jobs.c.id, jobs.c.lease_token).in_(bindparam("refs", expanding=True)),
    text(PROCESSING_SQL),
    jobs.c.lease_expires_at > NOW,
)


def _fenced(**values: Any) -> Any:
    return update(jobs).where(_FENCE).values(**values).returning(*jobs.c)


# a job with a cancel request ends cancelled at whatever ends its attempt, but a success
_REQUESTED = jobs.c.cancel_requested_at.is_not(None)
_CANCELLED = Status.CANCELLED.value


def _unless_requested(value: Any) -> Any:
    """`value`, or the cancelled job's finished_at (now) when a cancel was requested."""
    return case((_REQUESTED, NOW), else_=value)


COMPLETE = _fenced(status=Status.DONE.value, updated_at=NOW, finished_at=NOW, **_LEASE_CLEARED)
# a job with a result: one UPDATE each (in the same transaction), its JSON text bound
# as text so that the column keeps it verbatim
COMPLETE_ONE = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id"),
        jobs.c.lease_token == bindparam("token"),
        text(PROCESSING_SQL),
        jobs.c.lease_expires_at > NOW,
    )
    .values(
        status=Status.DONE.value,
        updated_at=NOW,
        finished_at=NOW,
        result=bindparam("b_result", type_=Text()),
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)
_REFUNDED = case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0)
RELEASE = _fenced(
    status=case((_REQUESTED, _CANCELLED), else_=Status.PENDING.value),
    attempts=_REFUNDED,
    started_at=None,
    finished_at=_unless_requested(jobs.c.finished_at),
    updated_at=NOW,
    **_LEASE_CLEARED,
)
# a job with a cancel request ends cancelled here: its worker learns it from the result
RENEW = _fenced(
    status=case((_REQUESTED, _CANCELLED), else_=jobs.c.status),
    worker_id=case((_REQUESTED, null()), else_=jobs.c.worker_id),
    lease_token=case((_REQUESTED, null()), else_=jobs.c.lease_token),
    lease_expires_at=case((_REQUESTED, null()), else_=bindparam("expires_at")),
    finished_at=_unless_requested(jobs.c.finished_at),
    updated_at=NOW,
)
SNOOZE = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id"),
        jobs.c.lease_token == bindparam("token"),
        text(PROCESSING_SQL),
        jobs.c.lease_expires_at > NOW,
    )
    .values(
        status=case((_REQUESTED, _CANCELLED), else_=Status.PENDING.value),
        attempts=_REFUNDED,
        snoozes=jobs.c.snoozes + 1,
        run_at=bindparam("snooze_at", type_=utc_datetime()),
        started_at=None,
        finished_at=_unless_requested(jobs.c.finished_at),
        updated_at=NOW,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)

_retrying = and_(bindparam("retryable", type_=Boolean()), jobs.c.retries < jobs.c.max_retries)
FAIL = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id"),
        jobs.c.lease_token == bindparam("token"),
        text(PROCESSING_SQL),
        jobs.c.lease_expires_at > NOW,
    )
    .values(
        status=case(
            (_REQUESTED, _CANCELLED), (_retrying, Status.FAILED.value), else_=Status.DLQ.value
        ),
        retries=case((_retrying, jobs.c.retries + 1), else_=jobs.c.retries),
        run_at=case((_retrying, bindparam("retry_at", type_=utc_datetime())), else_=jobs.c.run_at),
        finished_at=_unless_requested(case((_retrying, jobs.c.finished_at), else_=NOW)),
        error=bindparam("b_error"),
        updated_at=NOW,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)

_retry_left = jobs.c.retries < jobs.c.max_retries
EXPIRE = (
    update(jobs)
    .where(
        text(PROCESSING_SQL),
        or_(
            jobs.c.lease_expires_at <= NOW,
            jobs.c.worker_id.in_(bindparam("worker_ids", expanding=True)),
        ),
    )
    .values(
        status=case(
            (_REQUESTED, _CANCELLED), (_retry_left, Status.FAILED.value), else_=Status.DLQ.value
        ),
        retries=case((_retry_left, jobs.c.retries + 1), else_=jobs.c.retries),
        finished_at=_unless_requested(case((_retry_left, jobs.c.finished_at), else_=NOW)),
        error=bindparam("b_error"),
        updated_at=NOW,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)


def fenced_params(leases: Sequence[LeaseRef], params: dict[str, Any]) -> dict[str, Any]:
    """COMPLETE's, RELEASE's or RENEW's parameters: `params` (now, expires_at) and the
    leases."""
    return {
        **params,
        "ids": [ref.job_id for ref in leases],
        "refs": [(ref.job_id, ref.token) for ref in leases],
    }


def complete_with_results(
    conn: Connection, leases: Sequence[LeaseRef], results: Mapping[JobId, str], at: datetime
) -> list[JobRecord]:
    """Complete `leases` at `at` in the caller's transaction, storing the results: the
    jobs without one in one UPDATE, each job with one in an UPDATE of its own."""
    plain = [ref for ref in leases if ref.job_id not in results]
    done = jobs_of(conn.execute(COMPLETE, fenced_params(plain, {"now": at})).all()) if plain else []
    for ref in leases:
        result = results.get(ref.job_id)
        if result is None:
            continue
        params = {"now": at, "job_id": ref.job_id, "token": ref.token, "b_result": result}
        row = conn.execute(COMPLETE_ONE, params).first()
        if row is not None:
            done.append(job_of(row))
    return done


def fail_params(failures: Sequence[Failure], at: datetime) -> list[dict[str, Any]]:
    """FAIL's parameters, one set per failure (each has its own error and delay)."""
    return [
        {
            "now": at,
            "job_id": f.lease.job_id,
            "token": f.lease.token,
            "b_error": f.error,
            "retryable": f.retry_delay is not None,
            "retry_at": at + f.retry_delay if f.retry_delay is not None else at,
        }
        for f in failures
    ]


def snooze_params(snoozes: Sequence[Snoozed], at: datetime) -> list[dict[str, Any]]:
    """SNOOZE's parameters, one set per snoozed attempt (each has its own delay)."""
    return [
        {"now": at, "job_id": s.lease.job_id, "token": s.lease.token, "snooze_at": at + s.delay}
        for s in snoozes
    ]


def expire_params(worker_ids: Sequence[str], at: datetime) -> dict[str, Any]:
    return {"now": at, "worker_ids": list(worker_ids), "b_error": LEASE_EXPIRED_ERROR}


class FencedWrites:
    """complete, renew, release, fail, snooze and expire, for a repository that sets `_db` and
    `_at` (its clock, read inside the unit of work: under the write lock where writes
    are serialized, so a writer that waited never dates a lease in the past)."""

    _db: Database

    def _at(self, now: datetime | None) -> datetime:
        raise NotImplementedError

    def _made_due(self, jobs: list[JobRecord]) -> None:
        """Hook: release or expire made `jobs` claimable again (a notifier publishes)."""

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        if not results:
            return self._fenced(COMPLETE, leases, now)
        if not leases:
            return []
        return self._db.transaction(
            lambda conn: complete_with_results(conn, leases, results, self._at(now))
        )

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(RENEW, leases, now, lease)

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._due(self._fenced(RELEASE, leases, now))

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        if not failures:
            return []

        def work(conn: Connection) -> list[JobRecord]:
            # each failure has its own error and delay: one UPDATE each, one transaction
            rows = [conn.execute(FAIL, p).first() for p in fail_params(failures, self._at(now))]
            return [job_of(row) for row in rows if row is not None]

        return self._db.transaction(work)

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        if not snoozes:
            return []

        def work(conn: Connection) -> list[JobRecord]:
            # each snooze has its own delay: one UPDATE each, one transaction
            rows = [conn.execute(SNOOZE, p).first() for p in snooze_params(snoozes, self._at(now))]
            return [job_of(row) for row in rows if row is not None]

        return self._db.transaction(work)

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        def work(conn: Connection) -> list[JobRecord]:
            params = expire_params(worker_ids, self._at(now))
            return jobs_of(conn.execute(EXPIRE, params).all())

        return self._due(self._db.statement(work))

    def _fenced(
        self,
        statement: Any,
        leases: Sequence[LeaseRef],
        now: datetime | None,
        lease: timedelta = timedelta(0),
    ) -> list[JobRecord]:
        if not leases:
            return []

        def work(conn: Connection) -> list[JobRecord]:
            at = self._at(now)
            params = fenced_params(leases, {"now": at, "expires_at": at + lease})
            return jobs_of(conn.execute(statement, params).all())

        return self._db.statement(work)

    def _due(self, changed: list[JobRecord]) -> list[JobRecord]:
        if changed:
            self._made_due(changed)
        return changed

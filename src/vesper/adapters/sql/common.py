"""What both SQL job repositories share: reads, cancel/retry, and idempotent submission.

Statements are built once per repository (they depend on how the dialect spells "now")
and executed with bound parameters, so SQLAlchemy compiles each one a single time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import ColumnElement, Select, bindparam, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import ReturningUpdate

from vesper.adapters.sql.engines import Database
from vesper.adapters.sql.rows import aware_utc, job_of
from vesper.adapters.sql.tables import CLAIMABLE_SQL, jobs
from vesper.application.ports import Submitted
from vesper.domain.errors import IdempotencyConflict, IllegalTransition, JobNotFound
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobPage, JobQuery, page_of
from vesper.domain.states import TRANSITIONS, Status, allowed
from vesper.domain.stats import QueueStats
from vesper.domain.submission import NewJob

_MAX_SEQ = 2**63 - 1  # BIGINT / SQLite INTEGER
_RACES = 3  # cancel/retry: a status that keeps changing under us is reported after this


def status_list(action: str) -> str:
    """The SQL list of the statuses `action` may start from (the domain's table)."""
    return ", ".join(f"'{status.value}'" for status in sorted(TRANSITIONS[action][0]))


class SqlJobReads:
    """get, find, stats, cancel and retry, for a repository that sets `_db` and `_now`.

    `_now` is the SQL expression of the current time: the bound parameter `now` on
    SQLite, `COALESCE(:now, statement_timestamp())` on PostgreSQL.
    """

    def __init__(self, db: Database, now: ColumnElement[datetime]) -> None:
        self._db = db
        self._now = now
        self._get = select(jobs).where(jobs.c.id == bindparam("job_id"))
        self._finds: dict[tuple[bool, ...], Select[Any]] = {}
        self._counts = select(jobs.c.status, jobs.c.priority, func.count()).group_by(
            jobs.c.status, jobs.c.priority
        )
        self._oldest = select(func.min(jobs.c.run_at), now.label("now")).where(
            text(CLAIMABLE_SQL), jobs.c.run_at <= now
        )
        self._cancel = self._transition(
            "cancel", status=Status.CANCELLED.value, updated_at=now, finished_at=now
        )
        self._retry = self._transition(
            "retry",
            status=Status.PENDING.value,
            retries=0,
            run_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
        )

    def _transition(self, action: str, **values: Any) -> ReturningUpdate[Any]:
        return (
            update(jobs)
            .where(jobs.c.id == bindparam("job_id"), text(f"status IN ({status_list(action)})"))
            .values(**values)
            .returning(*jobs.c)
        )

    def _at(self, now: datetime | None) -> datetime | None:
        """The `now` parameter to bind (SQLite resolves None with its clock)."""
        return now

    def get(self, job_id: JobId) -> JobRecord:
        row = self._db.read(lambda conn: conn.execute(self._get, {"job_id": job_id}).first())
        if row is None:
            raise JobNotFound(job_id)
        return job_of(row)

    def find(self, query: JobQuery) -> JobPage:
        if query.type is not None and "\x00" in query.type:
            # no stored type holds NUL (submit refuses control characters), and
            # PostgreSQL text cannot even be compared with one
            return page_of([], query.limit)
        before = query.before_seq
        if before is not None and before > _MAX_SEQ:
            before = None  # every seq is below it (and the column cannot hold it)
        shape = (
            query.status is not None,
            query.type is not None,
            query.priority is not None,
            query.queue is not None,
        )
        statement = self._find_statement((*shape, before is not None))
        params = {
            "status": query.status.value if query.status is not None else None,
            "type": query.type,
            "priority": query.priority,
            "queue": query.queue,
            "before": before,
            "limit": query.limit + 1,
        }
        rows = self._db.read(lambda conn: conn.execute(statement, params).all())
        return page_of([job_of(row) for row in rows], query.limit)

    def _find_statement(self, shape: tuple[bool, ...]) -> Select[Any]:
        # one statement per combination of filters: a catch-all `(:x IS NULL OR ...)`
        # would keep PostgreSQL's generic plans off the (status, seq) and (type, seq) indexes
        statement = self._finds.get(shape)
        if statement is None:
            statement = select(jobs)
            for present, column, name in zip(
                shape,
                (jobs.c.status, jobs.c.type, jobs.c.priority, jobs.c.queue),
                ("status", "type", "priority", "queue"),
                strict=False,
            ):
                if present:
                    statement = statement.where(column == bindparam(name))
            if shape[4]:
                statement = statement.where(jobs.c.seq < bindparam("before"))
            statement = statement.order_by(jobs.c.seq.desc()).limit(bindparam("limit"))
            self._finds[shape] = statement
        return statement

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        params = {"now": self._at(now)}

        def work(conn: Connection) -> QueueStats:
            oldest, at = conn.execute(self._oldest, params).one()
            counts = {
                (Status(status), priority): n
                for status, priority, n in conn.execute(self._counts).all()
            }
            return QueueStats(counts=counts, oldest_due_run_at=job_time(oldest), now=at)

        return self._db.read(work)

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._change("cancel", self._cancel, job_id, now)

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._change("retry", self._retry, job_id, now)

    def _change(
        self, action: str, statement: ReturningUpdate[Any], job_id: JobId, now: datetime | None
    ) -> JobRecord:
        params = {"job_id": job_id, "now": self._at(now)}

        def work(conn: Connection) -> JobRecord:
            status = Status.PENDING
            for _ in range(_RACES):
                row = conn.execute(statement, params).first()
                if row is not None:
                    return job_of(row)
                current = conn.execute(self._get, params).first()
                if current is None:
                    raise JobNotFound(job_id)
                status = Status(current.status)
                if not allowed(action, status):
                    raise IllegalTransition(job_id, status, action)
                # the status changed between the two statements: try again
            raise IllegalTransition(job_id, status, action)

        changed = self._db.transaction(work, durable=True)
        self._changed(action, changed)
        return changed

    def _changed(self, action: str, job: JobRecord) -> None:
        """Hook: a job changed by cancel or retry (PostgreSQL notifies listeners)."""


def job_time(value: datetime | None) -> datetime | None:
    """An aggregate's datetime (min(run_at)) as aware UTC, or None."""
    if value is None:
        return None
    return aware_utc(value)


@attrs.frozen
class SubmitPlan:
    """A batch with the repeats of a key folded: what to insert, and where each result
    comes from."""

    unique: list[NewJob]  # in batch order: every keyless job, the first job of each key
    slots: list[int]  # for each job of the batch, its index in `unique`


def plan_submission(batch: Sequence[NewJob]) -> SubmitPlan:
    """Fold the repeats of an idempotency key inside one batch (as the memory store does).

    Raises:
        IdempotencyConflict: one key twice in the batch with different fingerprints.
    """
    unique: list[NewJob] = []
    by_key: dict[str, int] = {}
    slots: list[int] = []
    for new in batch:
        key = new.idempotency_key
        if key is not None and key in by_key:
            earlier = unique[by_key[key]]
            if earlier.fingerprint != new.fingerprint:
                raise IdempotencyConflict(key)
            slots.append(by_key[key])
            continue
        if key is not None:
            by_key[key] = len(unique)
        slots.append(len(unique))
        unique.append(new)
    return SubmitPlan(unique=unique, slots=slots)


def check_bound(new: NewJob, bound: JobRecord) -> None:
    """A replay must carry the fingerprint of the job its key is bound to."""
    if bound.fingerprint != new.fingerprint:
        raise IdempotencyConflict(new.idempotency_key or "")


def assemble(
    plan: SubmitPlan, created: dict[JobId, JobRecord], bound: dict[str, JobRecord]
) -> list[Submitted]:
    """The results in batch order: created jobs (a repeat of a key: not created), replays.

    Raises:
        IdempotencyConflict: a key bound to a job with another fingerprint.
    """
    if len(created) == len(plan.unique) == len(plan.slots):  # every job new, none repeated
        return [Submitted(job=created[new.id], created=True) for new in plan.unique]
    results: list[Submitted] = []
    seen: set[JobId] = set()
    for slot in plan.slots:
        new = plan.unique[slot]
        job = created.get(new.id)
        if job is not None:
            results.append(Submitted(job=job, created=new.id not in seen))
            seen.add(new.id)
            continue
        assert new.idempotency_key is not None, "a job without a key is always inserted"
        replayed = bound.get(new.idempotency_key)
        if replayed is None:
            raise RuntimeError(f"idempotency key {new.idempotency_key!r} bound to no job")
        check_bound(new, replayed)
        results.append(Submitted(job=replayed, created=False))
    return results

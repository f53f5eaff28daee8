"""The schedule registry in SQL: one row per periodic schedule (`vesper_schedules`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from vesper.adapters.clock import SystemClock
from vesper.adapters.sql.engines import Database
from vesper.adapters.sqlcore.rows import aware_utc
from vesper.adapters.sqlcore.tables import schedules, utc_datetime
from vesper.application.ports import Clock
from vesper.domain.errors import ScheduleNotFound
from vesper.domain.job import JobId
from vesper.domain.periodic import Schedule, ScheduleRecord

# what a declaration sets; the state columns (paused, last_tick, last_job_id) stay
_DECLARED = ("cron", "timezone", "type", "payload", "priority", "queue", "last_declared_at")


def record_of(row: Row[Any]) -> ScheduleRecord:
    m: Any = row._mapping
    last_tick, last_job = m["last_tick"], m["last_job_id"]
    return ScheduleRecord(
        schedule=Schedule(
            name=m["name"],
            cron=m["cron"],
            timezone=m["timezone"],
            type=m["type"],
            payload=m["payload"],
            priority=m["priority"],
            queue=m["queue"],
        ),
        paused=bool(m["paused"]),
        last_tick=aware_utc(last_tick) if last_tick is not None else None,
        last_job_id=JobId(last_job) if last_job is not None else None,
        last_declared_at=aware_utc(m["last_declared_at"]),
    )


class SqlScheduleRegistry:
    """Schedules; time as the job repository of the same store keeps it (PostgreSQL's
    clock there, the injected clock on SQLite)."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self._db = db
        self._clock = clock or SystemClock()
        self._postgres = db.postgres
        now_param = bindparam("now", type_=utc_datetime())
        now: Any = now_param
        if self._postgres:  # the database clock when now is None
            now = func.coalesce(
                cast(now_param, DateTime(timezone=True)), func.statement_timestamp()
            )
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        insert = dialect_insert(schedules).values(
            name=bindparam("s_name"),
            cron=bindparam("s_cron"),
            timezone=bindparam("s_timezone"),
            type=bindparam("s_type"),
            payload=bindparam("s_payload", type_=schedules.c.payload.type),
            priority=bindparam("s_priority"),
            queue=bindparam("s_queue"),
            paused=False,
            last_declared_at=now,
        )
        self._declare = insert.on_conflict_do_update(
            index_elements=[schedules.c.name],
            set_={name: insert.excluded[name] for name in _DECLARED},
        )
        tick = bindparam("tick", type_=utc_datetime())
        self._record_tick = (
            update(schedules)
            .where(
                schedules.c.name == bindparam("s_name"),
                or_(schedules.c.last_tick.is_(None), schedules.c.last_tick < tick),
            )
            .values(
                last_tick=tick, last_job_id=bindparam("job_id", type_=schedules.c.last_job_id.type)
            )
            .returning(schedules.c.name)
        )
        self._set_paused = (
            update(schedules)
            .where(schedules.c.name == bindparam("s_name"))
            .values(paused=bindparam("paused"))
            .returning(*schedules.c)
        )
        self._list = select(schedules).order_by(schedules.c.name)
        self._delete = (
            delete(schedules)
            .where(schedules.c.name == bindparam("s_name"))
            .returning(schedules.c.name)
        )

    def _at(self, now: datetime | None) -> datetime | None:
        return now if self._postgres else now or self._clock.now()

    def declare(self, schedules: Sequence[Schedule], *, now: datetime | None = None) -> None:
        if not schedules:
            return
        at = self._at(now)
        # by name: concurrent declarations lock the rows in one order (no deadlock)
        params = [
            {
                "s_name": s.name,
                "s_cron": s.cron,
                "s_timezone": s.timezone,
                "s_type": s.type,
                "s_payload": dict(s.payload),
                "s_priority": s.priority,
                "s_queue": s.queue,
                "now": at,
            }
            for s in sorted(schedules, key=lambda s: s.name)
        ]

        def work(conn: Connection) -> None:
            for one in params:
                conn.execute(self._declare, one)

        self._db.transaction(work)

    def record_tick(
        self, name: str, tick: datetime, job_id: JobId, *, now: datetime | None = None
    ) -> bool:
        params = {"s_name": name, "tick": tick, "job_id": job_id}
        row = self._db.statement(lambda conn: conn.execute(self._record_tick, params).first())
        return row is not None

    def set_paused(self, name: str, paused: bool) -> ScheduleRecord:
        params = {"s_name": name, "paused": paused}
        row = self._db.statement(lambda conn: conn.execute(self._set_paused, params).first())
        if row is None:
            raise ScheduleNotFound(name)
        return record_of(row)

    def list(self) -> list[ScheduleRecord]:
        rows = self._db.read(lambda conn: conn.execute(self._list).all())
        return [record_of(row) for row in rows]

    def delete(self, name: str) -> None:
        row = self._db.statement(lambda conn: conn.execute(self._delete, {"s_name": name}).first())
        if row is None:
            raise ScheduleNotFound(name)

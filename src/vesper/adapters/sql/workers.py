"""The worker registry in SQL: one row per live worker process."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Interval, bindparam, cast, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from vesper.adapters.clock import SystemClock
from vesper.adapters.sql.engines import Database
from vesper.adapters.sqlcore.rows import process_columns, process_of
from vesper.adapters.sqlcore.tables import utc_datetime, workers
from vesper.application.ports import Clock
from vesper.domain.fleet import WorkerProcess


class SqlWorkerRegistry:
    """Registered processes; time as the job repository of the same store keeps it."""

    def __init__(self, db: Database, clock: Clock | None = None, *, beat: Database | None = None):
        self._db = db
        self._beat = beat or db  # heartbeats get their own pool: a busy one cannot starve them
        self._clock = clock or SystemClock()
        self._postgres = db.postgres
        now_param = bindparam("now", type_=utc_datetime())
        now: Any = now_param
        if self._postgres:  # the database clock when now is None
            now = func.coalesce(
                cast(now_param, DateTime(timezone=True)), func.statement_timestamp()
            )
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        upsert = dialect_insert(workers).values(
            id=bindparam("w_id"),
            machine=bindparam("w_machine"),
            pid=bindparam("w_pid"),
            concurrency=bindparam("w_concurrency"),
            queues=bindparam("w_queues"),
            types=bindparam("w_types"),
            started_at=now,
            last_heartbeat=now,
        )
        self._register = upsert.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={
                name: upsert.excluded[name]
                for name in (
                    "machine",
                    "pid",
                    "concurrency",
                    "queues",
                    "types",
                    "started_at",
                    "last_heartbeat",
                )
            },
        ).returning(*workers.c)
        self._heartbeat = (
            update(workers)
            .where(workers.c.id == bindparam("w_id"))
            .values(last_heartbeat=now)
            .returning(workers.c.id)
        )
        self._deregister = delete(workers).where(workers.c.id == bindparam("w_id"))
        self._processes = select(workers).order_by(
            workers.c.machine, workers.c.started_at, workers.c.id
        )
        # SQLite keeps times as text: the cutoff is computed in Python and bound
        cutoff: Any = (
            now - cast(bindparam("dead_after"), Interval())
            if self._postgres
            else bindparam("cutoff", type_=utc_datetime())
        )
        self._reap = (
            delete(workers).where(workers.c.last_heartbeat < cutoff).returning(workers.c.id)
        )

    def _at(self, now: datetime | None) -> datetime | None:
        return now if self._postgres else now or self._clock.now()

    def register(self, process: WorkerProcess, *, now: datetime | None = None) -> WorkerProcess:
        served = process_columns(process)
        params = {
            "w_id": process.id,
            "w_machine": process.machine,
            "w_pid": process.pid,
            "w_concurrency": process.concurrency,
            "w_queues": served[0],
            "w_types": served[1],
            "now": self._at(now),
        }
        row = self._db.statement(lambda conn: conn.execute(self._register, params).one())
        return process_of(row)

    def heartbeat(self, worker_id: str, *, now: datetime | None = None) -> bool:
        params = {"w_id": worker_id, "now": self._at(now)}
        row = self._beat.statement(lambda conn: conn.execute(self._heartbeat, params).first())
        return row is not None

    def deregister(self, worker_id: str) -> None:
        self._db.statement(lambda conn: conn.execute(self._deregister, {"w_id": worker_id}))

    def processes(self) -> list[WorkerProcess]:
        rows = self._db.read(lambda conn: conn.execute(self._processes).all())
        return [process_of(row) for row in rows]

    def reap(self, *, dead_after: timedelta, now: datetime | None = None) -> list[str]:
        at = self._at(now)
        params: dict[str, Any] = {"now": at, "dead_after": dead_after}
        if at is not None:
            params["cutoff"] = at - dead_after

        def work(conn: Connection) -> list[str]:
            return [str(worker_id) for worker_id in conn.execute(self._reap, params).scalars()]

        return self._db.statement(work)

"""SQL stores (SQLite and PostgreSQL) on SQLAlchemy Core.

`open_store(url)` opens either, by the URL's scheme: `sqlite:///path.db`, or
`postgresql+psycopg://user@host:port/db` (plain `postgresql://` means psycopg 3 too).
SQLAlchemy loads only when this package is imported: entrypoints import it lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import text

from vesper.adapters.socket_notifier import SocketNotifier
from vesper.adapters.sql.engines import Database, is_postgres, open_engine, sql_url
from vesper.adapters.sql.migrate import Migration, migrate, migrate_database
from vesper.adapters.sql.notify import NOTIFY_SQL, PostgresNotifier
from vesper.adapters.sql.postgres import PostgresJobRepository
from vesper.adapters.sql.schedules import SqlScheduleRegistry
from vesper.adapters.sql.sqlite import SqliteJobRepository
from vesper.adapters.sql.workers import SqlWorkerRegistry
from vesper.application.ports import (
    Clock,
    JobRepository,
    Notifier,
    PoolFigures,
    ScheduleRegistry,
    StoreOptions,
    WorkerRegistry,
)

# heartbeats and lease renewals: a few connections of their own (a saturated
# pool must not starve them)
BEAT_POOL_SIZE = 1
BEAT_MAX_OVERFLOW = 2


class SqlStore:
    """A job repository, a worker registry and a schedule registry on one database.

    `capacity` is how many calls its main pool serves at once (the store gate admits
    that many); heartbeats and lease renewals on PostgreSQL have a pool of their own
    beside it (`pool_figures`). Its `notifier` is LISTEN/NOTIFY on PostgreSQL, and on
    SQLite a datagram to each subscribing process's socket in `<file>-wake/`.
    """

    def __init__(
        self,
        jobs: JobRepository,
        workers: WorkerRegistry,
        databases: list[Database],
        *,
        capacity: int,
        schedules: ScheduleRegistry,
        notifier: Notifier | None = None,
    ) -> None:
        self._jobs = jobs
        self._workers = workers
        self._databases = databases
        self.capacity: int | None = capacity
        self.schedules = schedules
        self.notifier = notifier

    @property
    def jobs(self) -> JobRepository:
        return self._jobs

    @property
    def workers(self) -> WorkerRegistry:
        return self._workers

    def pool_figures(self) -> Mapping[str, PoolFigures]:
        """The connection pools by name: main, and on PostgreSQL beat (for metrics)."""
        figures = {}
        for name, db in zip(("main", "beat"), self._databases, strict=False):
            pool = db.engine.pool
            # SQLite keeps SQLAlchemy's own pool, which has no size: it counts as 0
            size = getattr(pool, "size", None)
            figures[name] = PoolFigures(
                size=size() if callable(size) else 0,
                max_overflow=getattr(pool, "_max_overflow", 0),  # QueuePool has no getter
                in_use=getattr(pool, "checkedout", lambda: 0)(),
                idle=getattr(pool, "checkedin", lambda: 0)(),
            )
        return figures

    def migrate(self) -> str:
        """Bring the schema to alembic's head revision; says what it did."""
        done = migrate_database(self._databases[0])
        return describe_migration(done)

    def close(self) -> None:
        """Close every pooled connection; the store is unusable afterwards."""
        for db in self._databases:
            db.dispose()


def _notify(db: Database) -> None:
    db.statement(lambda conn: conn.execute(text(NOTIFY_SQL)))


def describe_migration(done: Migration) -> str:
    if not done.applied:
        return f"up to date at {done.after}"
    plural = "" if done.applied == 1 else "s"
    return f"applied {done.applied} migration{plural} ({done.before or 'base'} -> {done.after})"


def open_store(
    url: str, clock: Clock | None = None, options: StoreOptions | None = None
) -> SqlStore:
    """Open the SQLite or PostgreSQL store at `url` (a StoreFactory).

    Args:
        url: a SQLAlchemy URL (`sqlite:///path.db`, `postgresql://...`).
        clock: SQLite's clock (default: the host's). PostgreSQL uses the database clock.
        options: `auto_migrate` brings the schema to the newest revision first
            (idempotent, safe when several processes start at once); off assumes it is
            there. `pool_size` is the connections PostgreSQL's main pool keeps, and
            `max_overflow` those it opens beyond them on demand. Their sum is the
            store's `capacity`, on SQLite too, where it sizes only the gate (the pool
            stays SQLAlchemy's).

    Raises:
        ValueError: a URL that is neither a SQLite file nor PostgreSQL.
        StoreUnavailable: `migrate` could not reach the database.
    """
    options = options or StoreOptions()
    pool_size, max_overflow = options.pool_size, options.max_overflow
    parsed = sql_url(url)
    db = Database(open_engine(parsed, pool_size=pool_size, max_overflow=max_overflow))
    databases = [db]
    notifier: Notifier | None = None
    try:
        if options.auto_migrate:
            migrate_database(db)
        if is_postgres(parsed):
            beat = Database(
                open_engine(parsed, pool_size=BEAT_POOL_SIZE, max_overflow=BEAT_MAX_OVERFLOW)
            )
            databases.append(beat)
            jobs: JobRepository = PostgresJobRepository(db, beat=beat)
            workers = SqlWorkerRegistry(db, clock, beat=beat)
            notifier = PostgresNotifier(url, functools.partial(_notify, db))
        else:
            file = Path(parsed.database or "").absolute()
            sockets = SocketNotifier(file.with_name(f"{file.name}-wake"))
            jobs = SqliteJobRepository(db, clock, notify=sockets.publish)
            notifier = sockets
            workers = SqlWorkerRegistry(db, clock)
        schedules = SqlScheduleRegistry(db, clock)
    except BaseException:
        for opened in databases:
            opened.dispose()
        raise
    return SqlStore(
        jobs,
        workers,
        databases,
        capacity=pool_size + max_overflow,
        schedules=schedules,
        notifier=notifier,
    )


__all__ = [
    "PostgresJobRepository",
    "SqlScheduleRegistry",
    "SqlStore",
    "SqlWorkerRegistry",
    "SqliteJobRepository",
    "describe_migration",
    "migrate",
    "open_store",
]

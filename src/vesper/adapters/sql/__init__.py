"""SQL stores (SQLite and PostgreSQL) on SQLAlchemy Core.

`open_store(url)` opens either, by the URL's scheme: `sqlite:///path.db`, or
`postgresql+psycopg://user@host:port/db` (plain `postgresql://` means psycopg 3 too).
SQLAlchemy loads only when this package is imported: entrypoints import it lazily.
"""

from __future__ import annotations

from typing import Any

from vesper.adapters.sql.engines import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    Database,
    is_postgres,
    open_engine,
    sql_url,
)
from vesper.adapters.sql.migrate import migrate, migrate_database
from vesper.adapters.sql.postgres import PostgresJobRepository
from vesper.adapters.sql.schedules import SqlScheduleRegistry
from vesper.adapters.sql.sqlite import SqliteJobRepository
from vesper.adapters.sql.workers import SqlWorkerRegistry
from vesper.application.ports import Clock, JobRepository, ScheduleRegistry, WorkerRegistry

# heartbeats and lease renewals: a few connections of their own (a saturated
# pool must not starve them)
BEAT_POOL_SIZE = 1
BEAT_MAX_OVERFLOW = 2


class SqlStore:
    """A job repository, a worker registry and a schedule registry on one database.

    `capacity` is how many calls its main pool serves at once (the store gate admits
    that many); heartbeats and lease renewals on PostgreSQL have a pool of their own
    beside it (`pools`).
    """

    def __init__(
        self,
        jobs: JobRepository,
        workers: WorkerRegistry,
        databases: list[Database],
        *,
        capacity: int,
        schedules: ScheduleRegistry,
    ) -> None:
        self._jobs = jobs
        self._workers = workers
        self._databases = databases
        self.capacity: int | None = capacity
        self.schedules = schedules

    @property
    def jobs(self) -> JobRepository:
        return self._jobs

    @property
    def workers(self) -> WorkerRegistry:
        return self._workers

    @property
    def pools(self) -> dict[str, Any]:
        """The connection pools by name: main, and on PostgreSQL beat (for metrics)."""
        names = ("main", "beat")
        return {names[i]: db.engine.pool for i, db in enumerate(self._databases)}

    def close(self) -> None:
        """Close every pooled connection; the store is unusable afterwards."""
        for db in self._databases:
            db.dispose()


def open_store(
    url: str,
    *,
    clock: Clock | None = None,
    migrate: bool = True,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> SqlStore:
    """Open the SQLite or PostgreSQL store at `url`.

    Args:
        url: a SQLAlchemy URL (`sqlite:///path.db`, `postgresql://...`).
        clock: SQLite's clock (default: the host's). PostgreSQL uses the database clock.
        migrate: bring the schema to the newest revision first (idempotent, safe when
            several processes start at once); False assumes it is there.
        pool_size: the connections PostgreSQL's main pool keeps (VESPER_DB_POOL_SIZE).
        max_overflow: the connections it opens beyond them on demand
            (VESPER_DB_MAX_OVERFLOW). The sum of both is the store's `capacity`, on
            SQLite too, where it sizes only the gate (the pool stays SQLAlchemy's).

    Raises:
        ValueError: a URL that is neither a SQLite file nor PostgreSQL.
        StoreUnavailable: `migrate` could not reach the database.
    """
    parsed = sql_url(url)
    db = Database(open_engine(parsed, pool_size=pool_size, max_overflow=max_overflow))
    databases = [db]
    try:
        if migrate:
            migrate_database(db)
        if is_postgres(parsed):
            beat = Database(
                open_engine(parsed, pool_size=BEAT_POOL_SIZE, max_overflow=BEAT_MAX_OVERFLOW)
            )
            databases.append(beat)
            jobs: JobRepository = PostgresJobRepository(db, beat=beat)
            workers = SqlWorkerRegistry(db, clock, beat=beat)
        else:
            jobs = SqliteJobRepository(db, clock)
            workers = SqlWorkerRegistry(db, clock)
        schedules = SqlScheduleRegistry(db, clock)
    except BaseException:
        for opened in databases:
            opened.dispose()
        raise
    return SqlStore(
        jobs, workers, databases, capacity=pool_size + max_overflow, schedules=schedules
    )


__all__ = [
    "PostgresJobRepository",
    "SqlScheduleRegistry",
    "SqlStore",
    "SqlWorkerRegistry",
    "SqliteJobRepository",
    "migrate",
    "open_store",
]

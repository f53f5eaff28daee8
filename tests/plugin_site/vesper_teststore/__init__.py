"""A third-party storage adapter, written as a user would ship one: jobs in a SQLite file.

It imports `vesper.store` and nothing else of vesper (an import-linter contract in
vesper's pyproject.toml holds it to that), besides SQLAlchemy and the standard library.
docs/custom-stores.md walks through it. Registered under the entry-point group
`vesper.storage` by the dist-info beside it, so `VESPER_STORAGE=teststore` selects it;
`VESPER_DATABASE_URL=teststore:///path/q.db` names its file (default: teststore.db).

- Schema: vesper's shared tables, created by the migration hook (`vesper migrate`, or
  at open with VESPER_AUTO_MIGRATE).
- Concurrency: every write runs under SQLite's write lock (BEGIN IMMEDIATE), so a claim
  cannot hand a job to two callers, and the time of a write is read once the lock is held.
- Fencing: the shared fenced updates change a job only under its current lease.
- Queues: the claim below leaves the queues whose settings limit them (NOT_LIMITED_SQL)
  to the shared SqlQueues, which claims from each under its settings.
- Errors: "database is locked" is retried here; a missing table is SchemaNotMigrated,
  any other database error StoreUnavailable (one line, the cause named).
- Notifier: vesper.store's SocketNotifier (each subscribing process binds a Unix
  datagram socket in `<file>-wake/`; publish sends a datagram to each), as vesper's own
  SQLite store does.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Uuid,
    bindparam,
    create_engine,
    delete,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from vesper.store import (
    CLAIMABLE_SQL,
    NOT_LIMITED_SQL,
    NOW,
    BulkAction,
    BulkBatch,
    BulkFilter,
    Capabilities,
    Clock,
    FencedWrites,
    JobId,
    JobRecord,
    NewJob,
    SchemaNotMigrated,
    SocketNotifier,
    SqlJobReads,
    SqlPruning,
    SqlQueueing,
    SqlQueues,
    Status,
    StoreOptions,
    StoreUnavailable,
    Submitted,
    WorkerProcess,
    in_claim_order,
    jobs,
    jobs_of,
    metadata,
    plan_submission,
    process_columns,
    process_of,
    submit_serialized,
    utc_datetime,
    workers,
)

T = TypeVar("T")
DEFAULT_FILE = "teststore.db"
LOCKED_FOR_S = 30.0  # "database is locked" this long: give up (StoreUnavailable)
BEAT_LANE = 2  # heartbeats and renewals come from two threads outside the store gate
_WRITE = "teststore_write"  # execution option: begin with the write lock


class Database:
    """Units of work on the SQLite file: the error contract is kept here, once."""

    def __init__(self, path: Path, options: StoreOptions) -> None:
        self.engine = create_engine(
            f"sqlite:///{path}",
            pool_size=options.pool_size,
            max_overflow=options.max_overflow + BEAT_LANE,  # capacity + the beat lane
            connect_args={"check_same_thread": False, "timeout": 5.0},
        )
        event.listen(self.engine, "connect", _configure)
        event.listen(self.engine, "begin", _begin)

    def read(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, write=False)

    def statement(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, write=True)

    def transaction(self, work: Callable[[Connection], T], *, durable: bool = False) -> T:
        return self._run(work, write=True)  # synchronous=FULL: every commit is durable

    def _run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        deadline = time.monotonic() + LOCKED_FOR_S
        while True:
            try:
                with self.engine.connect() as conn:
                    session = conn.execution_options(**{_WRITE: write})
                    with session.begin():
                        return work(session)
            except OperationalError as exc:
                cause = str(exc.orig)
                if "locked" in cause and time.monotonic() < deadline:
                    time.sleep(random.uniform(0.002, 0.02))  # another writer holds the lock
                    continue
                if "no such table" in cause:
                    raise SchemaNotMigrated from None
                raise StoreUnavailable(f"the teststore database is unavailable: {cause}") from None


def _configure(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is ours (see _begin), not pysqlite's
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "busy_timeout = 5000"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# the claim: due jobs in claim order, leased in the same statement (under the write lock)
_due = (
    select(jobs.c.id)
    .where(text(CLAIMABLE_SQL), jobs.c.run_at <= NOW, text(NOT_LIMITED_SQL))
    .where(
        bindparam("any_type", type_=Boolean()) | jobs.c.type.in_(bindparam("types", expanding=True))
    )
    .where(
        bindparam("any_queue", type_=Boolean())
        | jobs.c.queue.in_(bindparam("queues", expanding=True))
    )
    .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.seq)
    .limit(bindparam("limit"))
)
CLAIM = (
    update(jobs)
    .where(jobs.c.id.in_(_due))
    .values(
        status=Status.PROCESSING.value,
        attempts=jobs.c.attempts + 1,
        worker_id=bindparam("b_worker"),
        lease_token=bindparam("b_token", type_=Uuid()),
        lease_expires_at=bindparam("b_expires", type_=utc_datetime()),
        started_at=NOW,
        updated_at=NOW,
    )
    .returning(*jobs.c)
)


class JobRepository(SqlQueueing, FencedWrites, SqlPruning, SqlJobReads):
    """get, find, stats, cancel, retry and bulk come from SqlJobReads, the fenced writes
    (complete, renew, release, fail, snooze, expire) from FencedWrites, prune from
    SqlPruning, claim (the limited queues' part) and the queues' settings and views
    from SqlQueueing; submit (with unique keys: submit_serialized) and the claim of the
    other queues are here."""

    # summary: SqlJobReads'; queues: SqlQueueing's
    capabilities = Capabilities(multi_process=True, summary=True, queues=True)

    def __init__(self, db: Database, clock: Clock, notify: Callable[[], None]) -> None:
        super().__init__(db, NOW)
        self._queues = SqlQueues(db, clock=lambda _conn: clock.now())
        self._db = db
        self._clock = clock
        self._notify = notify

    def now(self) -> datetime:
        return self._clock.now()

    def _at(self, now: datetime | None) -> datetime:
        return now or self._clock.now()  # called under the write lock: never in the past

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        if not jobs:
            return []
        plan = plan_submission(jobs)
        results = self._db.transaction(lambda c: submit_serialized(c, plan, self._at(now)))
        if any(result.created for result in results):
            self._notify()
        return results

    def _claim_unlimited(
        self,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        queues: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """The claim of the queues without limits (SqlQueueing's claim takes the others)."""

        def work(conn: Connection) -> list[Any]:
            at = self._at(now)
            params = {
                "now": at,
                "limit": limit,
                "any_type": types is None,
                "types": list(types or ["-"]),
                "any_queue": queues is None,
                "queues": list(queues or ["-"]),
                "b_worker": worker_id,
                "b_token": uuid.uuid4(),  # one per claim: the fence is (job id, token)
                "b_expires": at + lease,
            }
            return list(conn.execute(CLAIM, params).all())

        return in_claim_order(jobs_of(self._db.statement(work)))

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        job = super().retry(job_id, now=now)
        self._notify()
        return job

    def bulk(
        self, action: BulkAction, where: BulkFilter, *, limit: int, now: datetime | None = None
    ) -> BulkBatch:
        batch = super().bulk(action, where, limit=limit, now=now)
        if batch.changed and action is BulkAction.RETRY:
            self._notify()  # retried jobs are claimable
        return batch

    def _made_due(self, jobs: list[JobRecord]) -> None:
        self._notify()  # released or expired: claimable again


_register = insert(workers).values(
    id=bindparam("w_id"),
    machine=bindparam("w_machine"),
    pid=bindparam("w_pid"),
    concurrency=bindparam("w_concurrency"),
    queues=bindparam("w_queues"),
    types=bindparam("w_types"),
    started_at=NOW,
    last_heartbeat=NOW,
)
REGISTER = _register.on_conflict_do_update(
    index_elements=[workers.c.id],
    set_={c.name: _register.excluded[c.name] for c in workers.c if c.name != "id"},
).returning(*workers.c)
HEARTBEAT = (
    update(workers)
    .where(workers.c.id == bindparam("w_id"))
    .values(last_heartbeat=NOW)
    .returning(workers.c.id)
)
REAP = (
    delete(workers)
    .where(workers.c.last_heartbeat < bindparam("cutoff", type_=utc_datetime()))
    .returning(workers.c.id)
)


class WorkerRegistry:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def register(self, process: WorkerProcess, *, now: datetime | None = None) -> WorkerProcess:
        def work(conn: Connection) -> WorkerProcess:
            params = {
                **dict(zip(("w_queues", "w_types"), process_columns(process), strict=True)),
                "w_id": process.id,
                "w_machine": process.machine,
                "w_pid": process.pid,
                "w_concurrency": process.concurrency,
                "now": now or self._clock.now(),
            }
            return process_of(conn.execute(REGISTER, params).one())

        return self._db.statement(work)

    def heartbeat(self, worker_id: str, *, now: datetime | None = None) -> bool:
        def work(conn: Connection) -> bool:
            params = {"w_id": worker_id, "now": now or self._clock.now()}
            return conn.execute(HEARTBEAT, params).first() is not None

        return self._db.statement(work)

    def deregister(self, worker_id: str) -> None:
        statement = delete(workers).where(workers.c.id == worker_id)
        self._db.statement(lambda conn: conn.execute(statement))

    def processes(self) -> list[WorkerProcess]:
        statement = select(workers).order_by(workers.c.machine, workers.c.started_at, workers.c.id)
        return [process_of(row) for row in self._db.read(lambda c: c.execute(statement).all())]

    def reap(self, *, dead_after: timedelta, now: datetime | None = None) -> list[str]:
        def work(conn: Connection) -> list[str]:
            cutoff = (now or self._clock.now()) - dead_after
            return [
                str(worker_id) for worker_id in conn.execute(REAP, {"cutoff": cutoff}).scalars()
            ]

        return self._db.statement(work)


class TestStore:
    def __init__(self, path: Path, clock: Clock, options: StoreOptions) -> None:
        self._db = Database(path, options)
        self.capacity = options.pool_size + options.max_overflow
        self.notifier = SocketNotifier(path.with_name(f"{path.name}-wake"))
        self.jobs = JobRepository(self._db, clock, self.notifier.publish)
        self.workers = WorkerRegistry(self._db, clock)

    def migrate(self) -> str:
        """Create the tables; concurrent callers queue on the write lock."""

        def work(conn: Connection) -> str:
            if inspect(conn).has_table(jobs.name):
                return "teststore: the schema is up to date"
            metadata.create_all(conn)
            return "teststore: created the schema"

        return self._db.transaction(work)

    def close(self) -> None:
        self._db.engine.dispose()


def open_store(url: str, clock: Clock, options: StoreOptions) -> TestStore:
    """`teststore:///path/q.db` (or `teststore://q.db`, relative to the directory)."""
    path = Path(url.partition("://")[2] or DEFAULT_FILE)
    store = TestStore(path.absolute(), clock, options)
    if options.auto_migrate:
        store.migrate()
    return store

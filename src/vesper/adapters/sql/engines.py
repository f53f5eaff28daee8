"""Engines for SQLite and PostgreSQL, and how a unit of work runs on each.

A `Database` runs the repositories' work on a connection: `read` (no changes),
`statement` (one atomic statement) and `transaction` (several statements, all or
nothing). Errors that mean "the store did not answer" become StoreUnavailable with a
message that names no host, user, password or DSN, and a missing vesper table becomes
SchemaNotMigrated (its subclass); transient lock errors are retried
inside (SQLite's "database is locked", PostgreSQL's deadlocks), so callers never see them;
one that outlasts the retries is StoreUnavailable too. This is the ports' error contract
(vesper.application.ports): what means "the database did not answer" never leaves a
Database as a SQLAlchemy or driver error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from vesper.application.store_gate import STORE_WAIT_S
from vesper.domain.errors import SchemaNotMigrated, StoreUnavailable

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
SQLITE_RETRY_SECONDS = 30.0  # after this long of "database is locked", give up
PG_RETRIES = 5  # deadlock / serialization failures retried this many times
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
PG_CONNECT_TIMEOUT_S = 5
PING_AFTER_IDLE_S = 1.0
DEFAULT_POOL_SIZE = 10  # VESPER_DB_POOL_SIZE
DEFAULT_MAX_OVERFLOW = 5  # VESPER_DB_MAX_OVERFLOW
# The longest wait for a pooled connection, then StoreUnavailable. Callers that come
# through the process's store gate never wait here (the gate admits one call per
# connection, and bounds the wait for it); this is the bound for the others.
POOL_TIMEOUT_S = STORE_WAIT_S

_WRITE = "vesper_write"  # execution option: this SQLite connection begins IMMEDIATE
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_PG_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
_PG_UNDEFINED_TABLE = "42P01"  # vesper's tables are missing: the schema is not migrated
_DURABLE_BEGIN = "BEGIN; SET LOCAL synchronous_commit = on"
_DURABLE_STATEMENT = "durable statement"  # a marker for Database._postgres, never sent
_SYNC_KEY = "vesper_synchronous_commit"
_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def sql_url(url: str) -> URL:
    """The SQLAlchemy URL of `url`, with plain `postgresql://` mapped to psycopg 3.

    Raises:
        ValueError: not a SQLite file or PostgreSQL URL this adapter can open.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
            return parsed.set(drivername="postgresql+psycopg")
        raise ValueError(
            f"driver {parsed.drivername!r}: the PostgreSQL store uses psycopg 3 "
            "(postgresql+psycopg://)"
        )
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise ValueError(
                "an in-memory SQLite database is private to one connection: "
                "use a file (sqlite:///path.db) or VESPER_STORAGE=memory"
            )
        return parsed
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def open_engine(
    url: URL, *, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW
) -> Engine:
    """A configured engine for `url` (see `sql_url`).

    The PostgreSQL pool holds `pool_size` connections and opens up to `max_overflow`
    more on demand. SQLite keeps SQLAlchemy's pool.
    """
    if pool_size < 1 or max_overflow < 0:
        raise ValueError(f"pool size {pool_size} + {max_overflow}: need size >= 1, overflow >= 0")
    if is_postgres(url):
        return _postgres_engine(url, pool_size=pool_size, max_overflow=max_overflow)
    return _sqlite_engine(url)


def _postgres_engine(url: URL, *, pool_size: int, max_overflow: int) -> Engine:
    options = " ".join(
        filter(
            None,
            [
                str(url.query.get("options", "")),
                f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
                f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_TIMEOUT_MS}",
                "-c TimeZone=UTC",  # psycopg then hands back timestamptz in UTC
                "-c default_transaction_isolation=read\\ committed",
                # Every vesper query has a plan without a sort (its ORDER BY follows an
                # index) but the small workers listing. Forbidding sorts keeps the claim
                # on the ordered scan of the partial claim index even when statistics
                # are stale (a new table, a bulk load): the planner would otherwise
                # fetch and sort every due job at each claim.
                "-c enable_sort=off",
                # The price enable_sort puts on a sort (10^10) passes jit_above_cost, so
                # every statement that must sort (a key-concurrency or aging claim, a
                # listing) was JIT-compiled at each call: 150-200 ms of compiling for a
                # statement that runs in 1 ms, under the queue's lock.
                "-c jit=off",
            ],
        )
    )
    connect_args: dict[str, Any] = {"options": options}
    if "application_name" not in url.query:
        connect_args["application_name"] = "vesper"
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_S,
        # autocommit: see Database; explicit transactions run at READ COMMITTED, which
        # the claim (SKIP LOCKED) and submit (ON CONFLICT) rely on
        isolation_level="AUTOCOMMIT",
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping the connections that sat idle in the pool, not every checkout.

    SQLAlchemy's pool_pre_ping costs a round trip per call, which on the hot path (a
    connection back in the pool for microseconds) is a quarter of a claim. A connection
    idle for more than PING_AFTER_IDLE_S (the kind a server restart leaves dead) is
    pinged and, if dead, replaced before the caller sees it.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["vesper_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("vesper_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            dbapi_connection.execute("SELECT 1")
        except Exception as exc:  # any failure: the pool opens a new connection instead
            raise DisconnectionError("a pooled connection died while idle") from exc


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would BEGIN (deferred) behind our back;
        # with it off, the "begin" listener below decides how each transaction starts
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # a writer takes the write lock at BEGIN: a deferred transaction that reads and
        # then writes can fail to upgrade (SQLITE_BUSY_SNAPSHOT) or let two processes
        # read the same claimable rows
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Runs units of work on one engine; the repositories hold one each.

    PostgreSQL connections stay in autocommit: a single statement is atomic by itself
    and needs no BEGIN/COMMIT round trips, and a transaction is an explicit BEGIN ...
    COMMIT on the same connection (the pool rolls back one left open by an error).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._backend = "PostgreSQL" if self.postgres else "SQLite"

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, which changes nothing."""
        if self.postgres:
            return self._postgres(work, begin=None)
        return self._sqlite(work, write=False)

    def statement(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, one statement that changes rows (atomic on its own)."""
        if self.postgres:
            return self._postgres(work, begin=None)
        return self._sqlite(work, write=True)

    def transaction(self, work: Callable[[Connection], T], *, durable: bool = False) -> T:
        """Run `work` in one transaction: committed if it returns, rolled back if it raises.

        Args:
            durable: on PostgreSQL, wait for the commit to reach disk even where the
                server or the URL turned synchronous_commit off (an acknowledged submit
                must survive a crash).
        """
        if self.postgres:
            begin = _DURABLE_BEGIN if durable else "BEGIN"
            return self._postgres(work, begin=begin)
        return self._sqlite(work, write=True)

    def durable_statement(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, one statement, durably, in as few round trips as the session allows.

        A session that commits synchronously (anything but synchronous_commit=off, read
        once per connection) runs it alone in autocommit: the statement's own commit
        waits for the disk, one round trip in all. Otherwise it runs as `transaction(work,
        durable=True)`. On SQLite it is a write transaction.
        """
        if self.postgres:
            return self._postgres(work, begin=_DURABLE_STATEMENT)
        return self._sqlite(work, write=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def _postgres(self, work: Callable[[Connection], T], *, begin: str | None) -> T:
        for attempt in range(PG_RETRIES + 1):
            try:
                with self.engine.connect() as conn:
                    opening = begin
                    if opening is _DURABLE_STATEMENT:
                        opening = None if _commits_synchronously(conn) else _DURABLE_BEGIN
                    if opening is None:
                        return work(conn)
                    conn.exec_driver_sql(opening)  # no parameters: one round trip for both
                    result = work(conn)
                    conn.exec_driver_sql("COMMIT")
                    return result
            except DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate in _PG_RETRYABLE and attempt < PG_RETRIES:
                    time.sleep(random.uniform(0, 0.005 * 2**attempt))
                    continue
                if sqlstate == _PG_UNDEFINED_TABLE:
                    raise SchemaNotMigrated from None
                if isinstance(exc, _UNAVAILABLE) or exc.connection_invalidated:
                    raise StoreUnavailable(self._describe(exc)) from None
                raise  # any other driver error is a bug (the ports' error contract)
            except (PoolTimeout, DisconnectionError) as exc:
                raise StoreUnavailable(self._describe(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _sqlite(self, work: Callable[[Connection], T], *, write: bool) -> T:
        deadline = time.monotonic() + SQLITE_RETRY_SECONDS
        pause = 0.005
        while True:
            try:
                with self.engine.connect() as conn:
                    session = conn.execution_options(**{_WRITE: True}) if write else conn
                    with session.begin():
                        return work(session)
            except OperationalError as exc:
                if _sqlite_busy(exc) and time.monotonic() < deadline:
                    time.sleep(random.uniform(pause / 2, pause))
                    pause = min(pause * 2, 0.25)
                    continue
                if "no such table" in str(exc.orig):
                    raise SchemaNotMigrated from None
                raise StoreUnavailable(self._describe(exc)) from None
            except (InterfaceError, DisconnectionError, PoolTimeout) as exc:
                raise StoreUnavailable(self._describe(exc)) from None

    def _describe(self, exc: Exception) -> str:
        """What went wrong, without the server's text (it may name the host or user)."""
        orig = getattr(exc, "orig", None)
        if not self.postgres and orig is not None:
            return f"the SQLite store is unavailable: {str(orig).strip().splitlines()[0]}"
        if isinstance(exc, PoolTimeout):
            return "the PostgreSQL store is unavailable: no free connection in the pool"
        sqlstate = getattr(orig, "sqlstate", None)
        reason = _PG_REASONS.get(sqlstate or "") or _reason_of(str(orig or exc))
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        return f"the PostgreSQL store is unavailable: {reason}{code}"


# Fixed phrases only: libpq's own messages name the host, port, user or database.
_PG_REASONS = {
    "28P01": "password authentication failed (check DB_PASSWORD)",
    "28000": "the server rejected the connection (authentication)",
    "3D000": "the database does not exist",
    "57P01": "the server ended the connection (shutdown or terminated)",
    "57P03": "the server is starting up or shutting down",
    "53300": "too many connections",
    "57014": "the statement was cancelled (statement_timeout)",
}


def _reason_of(message: str) -> str:
    text = message.lower()
    for needle, reason in (
        ("password authentication failed", _PG_REASONS["28P01"]),
        ("does not exist", _PG_REASONS["3D000"]),
        ("connection refused", "connection refused"),
        ("timeout expired", "connection timed out"),
        ("could not translate host name", "unknown host name"),
        ("server closed the connection", "the connection was closed by the server"),
        ("terminating connection", "the connection was closed by the server"),
    ):
        if needle in text:
            return reason
    return "the database did not answer"


def _commits_synchronously(conn: Connection) -> bool:
    """Whether a commit on this session waits for the WAL to reach disk (read once per
    connection: the server, the role, the database or the URL may have turned it off)."""
    setting = conn.info.get(_SYNC_KEY)
    if setting is None:
        setting = str(conn.exec_driver_sql("SHOW synchronous_commit").scalar_one())
        conn.info[_SYNC_KEY] = setting
    return bool(setting != "off")


def _sqlite_busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text

"""The caller's own connection, for a submit inside the caller's transaction.

`app.enqueue(..., connection=conn)` hands the store a connection it did not open: a
SQLAlchemy Connection or Session, their asyncio forms (AsyncConnection, AsyncSession),
or a psycopg connection (sync or async). This module tells them apart, runs the store's
statements on them without ever committing or rolling back, and hears their commits.

Hearing a commit: SQLAlchemy Sessions have an `after_commit` event. A Core Connection
has only `commit`, dispatched just before the driver commits; that is early enough to
be right. On SQLite every claim is a writer (BEGIN IMMEDIATE), so a worker woken then
queues behind the committing transaction's write lock and sees the job. On PostgreSQL
the wake-up that counts is the NOTIFY delivered at the commit itself. A psycopg
connection has no commit hook: on PostgreSQL its NOTIFY wakes every listener anyway.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Generator
from typing import Any, Literal, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import UnboundExecutionError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sql.postgres_statements import driver_sql

try:  # asyncio SQLAlchemy needs greenlet; a caller without it has no async connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
except ImportError:  # vesper's own dependencies leave greenlet out

    class AsyncConnection:  # type: ignore[no-redef]  # stands in: nothing is an instance
        pass

    class AsyncSession:  # type: ignore[no-redef]
        pass


T = TypeVar("T")

log = logging.getLogger("vesper")

Kind = Literal["sqlalchemy", "sqlalchemy_async", "psycopg", "psycopg_async"]
# steps as postgres.py's `submission` makes them: (statement, parameters, tuple rows?)
Steps = Generator[tuple[TextClause, dict[str, Any], bool], list[Any], T]

KINDS = (
    "a SQLAlchemy Connection or Session (or AsyncConnection, AsyncSession) or a psycopg connection"
)


def kind_of(connection: object, *, database: str) -> Kind:
    """Which kind of connection `connection` is; `database` is the store's backend
    (SQLAlchemy's dialect name: postgresql, sqlite).

    Raises:
        TypeError: a connection of another kind, or to another kind of database.
    """
    kind: Kind
    if isinstance(connection, Connection | Session):
        kind, dialect = "sqlalchemy", _dialect(connection)
    elif isinstance(connection, AsyncConnection | AsyncSession):
        kind = "sqlalchemy_async"
        if isinstance(connection, AsyncSession):
            dialect = _dialect(connection.sync_session)
        else:
            dialect = connection.dialect.name
    elif isinstance(connection, psycopg.Connection | psycopg.AsyncConnection):
        kind = "psycopg" if isinstance(connection, psycopg.Connection) else "psycopg_async"
        dialect = "postgresql"
        _check_in_transaction(connection)
    elif isinstance(connection, sqlite3.Connection):
        raise TypeError(
            "connection: a sqlite3 connection cannot be joined; wrap the database in a "
            "SQLAlchemy engine and pass its Connection or Session"
        )
    else:
        raise TypeError(f"connection: expected {KINDS}, got {type(connection).__name__}")
    if dialect != database:
        raise TypeError(
            f"connection: it is connected to {_NAMES.get(dialect, dialect)}, "
            f"but vesper's store is {_NAMES.get(database, database)}"
        )
    return kind


_NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


def _dialect(connection: Connection | Session) -> str:
    if isinstance(connection, Connection):
        return connection.dialect.name
    try:
        return connection.get_bind().dialect.name
    except UnboundExecutionError:
        raise TypeError("connection: the Session is bound to no engine") from None


def _check_in_transaction(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> None:
    # in autocommit mode outside `with conn.transaction()` each statement commits alone:
    # the job would exist whatever the caller does next
    idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if connection.autocommit and idle:
        raise TypeError(
            "connection: it is in autocommit mode with no transaction open, so the job "
            "would commit on its own; enqueue inside `with conn.transaction():`"
        )


# -- running work on it -------------------------------------------------------------------


def sqlalchemy_connection(connection: object) -> Connection:
    """The Connection under a sync Connection or Session, in the Session's transaction."""
    if isinstance(connection, Session):
        return connection.connection()
    assert isinstance(connection, Connection)
    return connection


async def run_async(connection: object, work: Callable[[Connection], T]) -> T:
    """`work` on the sync Connection under an AsyncConnection or AsyncSession."""
    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    assert isinstance(connection, AsyncConnection)
    return await connection.run_sync(work)


def run_steps_sqlalchemy(conn: Connection, steps: Steps[T]) -> T:
    """Run `steps` through SQLAlchemy (whatever driver the caller's engine uses)."""
    try:
        statement, params, _ = next(steps)
        while True:
            rows = conn.execute(statement, params).all()  # tuples, and mappings by name
            statement, params, _ = steps.send(list(rows))
    except StopIteration as done:
        result: T = done.value
        return result


def run_steps_psycopg(conn: psycopg.Connection[Any], steps: Steps[T]) -> T:
    try:
        statement, params, tuples = next(steps)
        while True:
            with conn.cursor(row_factory=tuple_row if tuples else dict_row) as cursor:
                cursor.execute(driver_sql(statement), params)
                rows = cursor.fetchall() if cursor.description is not None else []
            statement, params, tuples = steps.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_steps_psycopg_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T]) -> T:
    try:
        statement, params, tuples = next(steps)
        while True:
            async with conn.cursor(row_factory=tuple_row if tuples else dict_row) as cursor:
                await cursor.execute(driver_sql(statement), params)
                rows = await cursor.fetchall() if cursor.description is not None else []
            statement, params, tuples = steps.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


# -- hearing its commit -------------------------------------------------------------------

# the callbacks waiting for each Session's or Connection's commit; its listeners are added
# once, when it is first seen, and live as long as it does
_waiting: weakref.WeakKeyDictionary[Session | Connection, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def after_commit(connection: object, callback: Callable[[], None]) -> None:
    """Call `callback` once when the transaction open on `connection` commits; drop it
    when that transaction rolls back or ends otherwise. A psycopg connection cannot be
    heard: nothing is called."""
    target: Session | Connection | None
    if isinstance(connection, AsyncSession):
        target = connection.sync_session
    elif isinstance(connection, AsyncConnection):
        target = connection.sync_connection
    elif isinstance(connection, Session | Connection):
        target = connection
    else:
        return
    if target is None:  # an AsyncConnection never started: it wrote nothing
        return
    with _lock:
        callbacks = _waiting.get(target)
        if callbacks is None:
            callbacks = _waiting[target] = []
            _listen(target)
        callbacks.append(callback)


def _listen(target: Session | Connection) -> None:
    if isinstance(target, Session):
        event.listen(target, "after_commit", _session_committed)
        event.listen(target, "after_transaction_end", _session_ended)
    else:
        event.listen(target, "commit", _committed)
        event.listen(target, "rollback", _dropped)


def _committed(target: Session | Connection) -> None:
    with _lock:
        callbacks = _waiting.get(target) or []
        _waiting[target] = []
    for callback in callbacks:
        try:
            callback()
        except Exception:  # the caller's commit must not fail for a wake-up
            log.exception("vesper: a callback after a commit failed")


def _dropped(target: Session | Connection) -> None:
    with _lock:
        if target in _waiting:
            _waiting[target] = []


def _session_committed(session: Session) -> None:
    # a released savepoint is reported as a commit too: only the outermost one counts
    if not session.in_nested_transaction():
        _committed(session)


def _session_ended(session: Session, transaction: Any) -> None:
    # the outermost transaction ended (after its commit, a rollback or a close); a
    # savepoint's end leaves the jobs to the transaction around it
    if transaction.parent is None:
        _dropped(session)

"""`app.enqueue(..., connection=conn)` with every kind of caller's connection, on SQLite
and PostgreSQL: the jobs exist iff the caller commits, stay invisible to GET /jobs while
its transaction is open, and wake the workers at the commit (never at a rollback)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import vesper
from tests.integration.harness import FAST, read_ledger, starts, wait_until, workers
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobRecord
from vesper.domain.query import JobQuery
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.http import create_app
from vesper.entrypoints.service import build_runner
from vesper.testing import postgres as pg

WhileOpen = Callable[[], None]


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def _requests() -> list[vesper.JobRequest]:
    return [vesper.JobRequest(type="sms", payload={"n": 1}), vesper.JobRequest(type="sms")]


# -- one transaction of each kind: enqueue one job and a batch of two, run `while_open`,
# -- then commit or roll back; returns the three jobs


def sa_connection(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            written = [app.enqueue("email", {"to": "a@b"}, connection=conn)]
            written += app.enqueue_many(_requests(), connection=conn)
            while_open()
            conn.commit() if commit else conn.rollback()
        return written
    finally:
        engine.dispose()


def sa_session(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            written = [app.enqueue("email", {"to": "a@b"}, connection=session)]
            written += app.enqueue_many(_requests(), connection=session)
            while_open()
            session.commit() if commit else session.rollback()
        return written
    finally:
        engine.dispose()


def sa_async_connection(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    async def main() -> list[JobRecord]:
        engine = create_async_engine(_async_url(url))
        try:
            async with engine.connect() as conn:
                written = [await app.enqueue("email", {"to": "a@b"}, connection=conn)]
                written += await app.enqueue_many(_requests(), connection=conn)
                await asyncio.to_thread(while_open)
                await (conn.commit() if commit else conn.rollback())
            return written
        finally:
            await engine.dispose()

    return asyncio.run(main())


def sa_async_session(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    async def main() -> list[JobRecord]:
        engine = create_async_engine(_async_url(url))
        try:
            async with AsyncSession(engine) as session:
                written = [await app.enqueue("email", {"to": "a@b"}, connection=session)]
                written += await app.enqueue_many(_requests(), connection=session)
                await asyncio.to_thread(while_open)
                await (session.commit() if commit else session.rollback())
            return written
        finally:
            await engine.dispose()

    return asyncio.run(main())


def psycopg_sync(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    with psycopg.connect(_libpq(url)) as conn:
        written = [app.enqueue("email", {"to": "a@b"}, connection=conn)]
        written += app.enqueue_many(_requests(), connection=conn)
        while_open()
        conn.commit() if commit else conn.rollback()
    return written


def psycopg_async(app: App, url: str, commit: bool, while_open: WhileOpen) -> list[JobRecord]:
    async def main() -> list[JobRecord]:
        async with await psycopg.AsyncConnection.connect(_libpq(url)) as conn:
            written = [await app.enqueue("email", {"to": "a@b"}, connection=conn)]
            written += await app.enqueue_many(_requests(), connection=conn)
            await asyncio.to_thread(while_open)
            await (conn.commit() if commit else conn.rollback())
        return written

    return asyncio.run(main())


KINDS: dict[str, Callable[[App, str, bool, WhileOpen], list[JobRecord]]] = {
    "sqlalchemy-connection": sa_connection,
    "sqlalchemy-session": sa_session,
    "sqlalchemy-async-connection": sa_async_connection,
    "sqlalchemy-async-session": sa_async_session,
    "psycopg": psycopg_sync,
    "psycopg-async": psycopg_async,
}
pg_mark = pytest.mark.postgres
HEARD = {k for k in KINDS if k.startswith("sqlalchemy")}  # psycopg has no commit hook
CASES = [
    pytest.param("sqlite", kind, id=f"sqlite-{kind}")
    for kind in KINDS
    if not kind.startswith("psycopg")
] + [
    pytest.param("postgres", kind, id=f"postgres-{kind}", marks=pytest.mark.postgres)
    for kind in KINDS
]


class Scene:
    """An App on an empty store, its HTTP API, its local wake-ups and (PostgreSQL) a
    LISTEN connection on the workers' channel."""

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["VESPER_DATABASE_URL"]
        self.app = App({**env, **FAST})
        self.wakeups = 0
        self.app.container.job_signal().subscribe(self._woken)
        self._stack = ExitStack()
        self.client = self._stack.enter_context(
            TestClient[Litestar](create_app(self.app.container))
        )
        self.listen: psycopg.Connection[Any] | None = None
        if env["VESPER_STORAGE"] == "postgres":
            self.listen = psycopg.connect(_libpq(self.url), autocommit=True)
            self.listen.execute("LISTEN vesper_jobs")

    def _woken(self) -> None:
        self.wakeups += 1

    def listed(self) -> list[str]:
        response = self.client.get("/jobs")
        assert response.status_code == 200, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    def notifications(self, wait: float) -> int:
        assert self.listen is not None
        return sum(1 for _ in self.listen.notifies(timeout=wait))

    def close(self) -> None:
        if self.listen is not None:
            self.listen.close()
        self._stack.close()
        self.app.close()


@pytest.fixture
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scene]:
    storage = request.node.callspec.params["storage"]
    if storage == "sqlite":
        env = {"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    else:
        url: str = request.getfixturevalue("postgres_database")
        pg.truncate(url)
        env = {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url}
    made = Scene(env)
    made.app.container.store()  # migrated before the caller's engine looks for the tables
    yield made
    made.close()


@pytest.mark.parametrize(("storage", "kind"), CASES)
def test_commit_makes_the_jobs_visible_wakes_workers_and_they_run(
    scene: Scene, storage: str, kind: str
) -> None:
    seen_while_open: list[list[str]] = []
    written = KINDS[kind](
        scene.app, scene.url, True, lambda: seen_while_open.append(scene.listed())
    )
    assert seen_while_open == [[]], "GET /jobs showed jobs of an open transaction"
    assert [j.type for j in written] == ["email", "sms", "sms"]
    assert sorted(scene.listed()) == sorted(str(j.id) for j in written)
    if kind in HEARD:
        assert scene.wakeups >= 1, "this process's workers were not woken at the commit"
    if scene.listen is not None:
        assert scene.notifications(wait=5) >= 1, "no NOTIFY was delivered at the commit"

    ran: list[str] = []

    @scene.app.consumer()
    def consume(job: vesper.Job) -> None:
        ran.append(job.type)

    asyncio.run(asyncio.wait_for(build_runner(scene.app).run(until_idle=True), 30))
    assert sorted(ran) == ["email", "sms", "sms"]
    assert {scene.app.container.get_job()(j.id).status for j in written} == {Status.DONE}


@pytest.mark.parametrize(("storage", "kind"), CASES)
def test_rollback_leaves_no_job_and_wakes_no_one(scene: Scene, storage: str, kind: str) -> None:
    seen_while_open: list[list[str]] = []
    written = KINDS[kind](
        scene.app, scene.url, False, lambda: seen_while_open.append(scene.listed())
    )
    assert seen_while_open == [[]]
    assert len(written) == 3
    assert scene.listed() == []
    assert scene.app.container.get_stats()().total == 0
    assert scene.wakeups == 0
    if scene.listen is not None:
        assert scene.notifications(wait=0.5) == 0


def _keyed(app: App, conn: Any) -> list[JobRecord]:
    """Jobs with unique keys, written on `conn` (a sync connection): one key an active
    job holds, one new."""
    written = [app.enqueue("email", {"n": 2}, unique_key="report", connection=conn)]
    new = vesper.JobRequest(type="sms", payload={}, unique_key="fresh")
    return written + app.enqueue_many([new], connection=conn)


def _keyed_psycopg_async(app: App, url: str) -> list[JobRecord]:
    async def main() -> list[JobRecord]:
        async with await psycopg.AsyncConnection.connect(_libpq(url)) as conn:
            written = [await app.enqueue("email", {"n": 2}, unique_key="report", connection=conn)]
            new = vesper.JobRequest(type="sms", payload={}, unique_key="fresh")
            written += await app.enqueue_many([new], connection=conn)
            await conn.commit()
        return written

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("storage", "kind"),
    [
        pytest.param("sqlite", "sqlalchemy", id="sqlite-sqlalchemy"),
        pytest.param("postgres", "sqlalchemy", id="postgres-sqlalchemy", marks=pg_mark),
        pytest.param("postgres", "psycopg", id="postgres-psycopg", marks=pg_mark),
        pytest.param("postgres", "psycopg-async", id="postgres-psycopg-async", marks=pg_mark),
    ],
)
def test_a_unique_key_held_by_an_active_job_returns_it_in_a_callers_transaction(
    scene: Scene, storage: str, kind: str
) -> None:
    holder = scene.app.enqueue("email", {"n": 1}, unique_key="report")
    if kind == "psycopg-async":
        written = _keyed_psycopg_async(scene.app, scene.url)
    elif kind == "psycopg":
        with psycopg.connect(_libpq(scene.url)) as conn:
            written = _keyed(scene.app, conn)
            conn.commit()
    else:
        engine = create_engine(scene.url)
        try:
            with engine.connect() as conn:
                written = _keyed(scene.app, conn)
                conn.commit()
        finally:
            engine.dispose()
    held, fresh = written
    assert held == holder  # the active job holding the key, as a standalone submit gives
    assert (fresh.type, fresh.unique_key) == ("sms", "fresh")
    assert sorted(scene.listed()) == sorted([str(holder.id), str(fresh.id)])


# -- what a caller can get wrong: one clear line each


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[tuple[App, str]]:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    app = App({"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": url})
    app.container.store()
    yield app, url
    app.close()


def test_a_bad_job_is_refused_before_anything_is_written(sqlite_app: tuple[App, str]) -> None:
    app, url = sqlite_app
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            with pytest.raises(InvalidRequest, match="priority"):
                app.enqueue("email", priority=11, connection=conn)
            with pytest.raises(InvalidRequest, match=r"jobs\[1\]\.type"):
                app.enqueue_many(
                    [vesper.JobRequest(type="a"), vesper.JobRequest(type="")], connection=conn
                )
    finally:
        engine.dispose()
    assert app.container.get_stats()().total == 0


def test_an_async_connections_bad_job_is_refused_at_the_call_not_the_await(
    sqlite_app: tuple[App, str],
) -> None:
    app, url = sqlite_app

    async def main() -> None:
        engine = create_async_engine(_async_url(url))
        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(InvalidRequest, match="type"):
                    app.enqueue("", connection=session)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_connections_that_cannot_be_joined_are_named(
    sqlite_app: tuple[App, str], tmp_path: Path
) -> None:
    app, _ = sqlite_app
    raw = sqlite3.connect(tmp_path / "q.db")
    try:
        with pytest.raises(TypeError, match="sqlite3 connection cannot be joined"):
            app.enqueue("email", connection=raw)  # type: ignore[call-overload]
    finally:
        raw.close()
    with pytest.raises(TypeError, match="expected a SQLAlchemy Connection or Session"):
        app.enqueue("email", connection=object())  # type: ignore[call-overload]
    other = create_engine("sqlite://")
    try:
        with other.connect() as conn, pytest.raises(OperationalError, match="no such table"):
            # another SQLite database, without vesper's tables: the driver says so
            app.enqueue("email", connection=conn)
    finally:
        other.dispose()


def test_a_memory_store_cannot_join_a_transaction() -> None:
    app = App({"VESPER_STORAGE": "memory"})
    engine = create_engine("sqlite://")
    try:
        with (
            engine.connect() as conn,
            pytest.raises(TypeError, match="memory store cannot write in your transaction"),
        ):
            app.enqueue("email", connection=conn)
    finally:
        engine.dispose()
        app.close()


@pytest.mark.postgres
def test_a_postgres_connection_to_a_sqlite_store_and_autocommit_are_refused(
    sqlite_app: tuple[App, str], postgres_database: str
) -> None:
    app, _ = sqlite_app
    with (
        psycopg.connect(_libpq(postgres_database)) as conn,
        pytest.raises(TypeError, match="connected to PostgreSQL, but vesper's store is SQLite"),
    ):
        app.enqueue("email", connection=conn)
    pg_app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": postgres_database})
    try:
        with psycopg.connect(_libpq(postgres_database), autocommit=True) as conn:
            with pytest.raises(TypeError, match="autocommit mode"):
                pg_app.enqueue("email", connection=conn)
            with conn.transaction():  # an explicit transaction is joined
                job = pg_app.enqueue("email", connection=conn)
        assert pg_app.container.get_job()(job.id).id == job.id
    finally:
        pg_app.close()


# -- PostgreSQL: a worker in another process, waiting with a long poll interval


@pytest.mark.postgres
@pytest.mark.slow
def test_a_waiting_worker_in_another_process_starts_the_job_at_the_commit(
    postgres_database: str, tmp_path: Path
) -> None:
    pg.truncate(postgres_database)
    ledger = tmp_path / "ledger"
    env = {
        "VESPER_STORAGE": "postgres",
        "VESPER_DATABASE_URL": postgres_database,
        **FAST,
        "VESPER_POLL_INTERVAL": "60s",  # only a notification can wake it in time
        "VESPER_TEST_LEDGER": str(ledger),
        "WORKERS": "2",
    }
    app = App(env)
    engine = create_engine(postgres_database)
    try:
        with workers(1, env, tmp_path) as (process,):
            wait_until(
                lambda: app.container.get_fleet()().total_workers,
                timeout=60,
                what="the worker to register",
            )
            time.sleep(1.0)  # its first claims are done: it waits for a notification
            with Session(engine) as session:
                job = app.enqueue("record", connection=session)
                session.commit()
                committed = time.time()
            entry = wait_until(
                lambda: starts(read_ledger(ledger)),
                timeout=30,
                interval=0.005,
                what=f"job {job.id} to start\n{process.output()}",
            )[0]
        latency = entry["t"] - committed
        print(f"commit -> start in another process: {latency * 1000:.1f} ms")
        # the poll interval is 60 s: a start within seconds came from the NOTIFY
        assert entry["job_id"] == str(job.id)
        assert latency < 5.0
    finally:
        engine.dispose()
        app.close()


def test_concurrent_callers_with_one_key_get_one_job(sqlite_app: tuple[App, str]) -> None:
    """Through the App: two sessions enqueue with one key at once; one job results."""
    app, url = sqlite_app
    engine = create_engine(url)
    barrier = threading.Barrier(2)
    results: list[JobRecord] = []

    def caller() -> None:
        with Session(engine) as session:
            barrier.wait(timeout=10)
            results.append(
                app.enqueue("email", {"to": "a@b"}, idempotency_key="k", connection=session)
            )
            session.commit()

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engine.dispose()
    assert len(results) == 2
    assert results[0].id == results[1].id
    assert app.container.get_stats()().total == 1


@pytest.mark.postgres
def test_a_released_savepoint_is_not_the_commit(postgres_database: str) -> None:
    """Session: a job enqueued in a savepoint wakes the workers at the outer commit, and
    no one when the outer transaction rolls back. (PostgreSQL: pysqlite's legacy
    transaction handling commits at a savepoint's release, SQLAlchemy's documented
    caveat.)"""
    pg.truncate(postgres_database)
    app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": postgres_database})
    woken: list[int] = []
    app.container.job_signal().subscribe(lambda: woken.append(1))
    engine = create_engine(postgres_database)
    try:
        with Session(engine) as session:
            session.begin()
            with session.begin_nested():
                app.enqueue("email", connection=session)
            assert woken == []  # the savepoint was released: nothing is committed yet
            session.rollback()
            assert woken == []
            session.begin()
            with session.begin_nested():
                job = app.enqueue("email", connection=session)
            session.commit()
            assert woken == [1]
        assert [j.id for j in app.container.list_jobs()(JobQuery()).jobs] == [job.id]
    finally:
        engine.dispose()
        app.close()

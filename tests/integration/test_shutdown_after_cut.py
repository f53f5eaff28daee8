"""PostgreSQL: a `vesper worker` stopped right after the server cut its connections still
leaves the fleet and hands its unfinished jobs back: the shutdown's store calls are
retried on fresh connections within the grace period."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import FAST, WorkerProcess, read_ledger, starts, wait_until
from vesper.adapters.sql.notify import libpq_conninfo
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.testing import postgres as pg

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRIES = 3  # the reported race left the row in 4 tries of 4


@pytest.fixture
def env(postgres_database: str) -> dict[str, str]:
    pg.truncate(postgres_database)
    return {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": postgres_database, **FAST}


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """The worker processes a test starts, killed at its end if still running."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def _cut_connections(url: str) -> int:
    """Terminate every other backend of the database, as an operator or a failover does."""
    rows = _query(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return len(rows)


def _registered(url: str) -> list[str]:
    return [str(row[0]) for row in _query(url, "SELECT id FROM vesper_workers")]


def _cut_then_sigterm(url: str, process: WorkerProcess, rng: random.Random) -> None:
    assert _cut_connections(url) > 0
    time.sleep(rng.uniform(0, 0.05))
    process.signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, process.output()[-2000:]


def test_a_worker_stopped_right_after_a_cut_leaves_the_fleet(
    env: dict[str, str], processes: list[WorkerProcess], tmp_path: Path
) -> None:
    url = env["VESPER_DATABASE_URL"]
    rng = random.Random()
    for attempt in range(TRIES):
        process = WorkerProcess({**env, "WORKERS": "4"}, tmp_path / f"worker-{attempt}.log")
        processes.append(process)
        wait_until(lambda: _registered(url), timeout=30, what="the worker to register")
        time.sleep(1.5)  # heartbeats and polls: every pooled connection was used just now
        _cut_then_sigterm(url, process, rng)
        assert _registered(url) == [], f"try {attempt + 1}:\n{process.output()[-2000:]}"


def test_a_worker_stopped_right_after_a_cut_releases_its_unfinished_jobs(
    env: dict[str, str], processes: list[WorkerProcess], tmp_path: Path
) -> None:
    url = env["VESPER_DATABASE_URL"]
    ledger = tmp_path / "ledger"
    app = App(env)
    try:
        jobs = [app.enqueue("record", {"sleep": 30}) for _ in range(2)]
    finally:
        app.close()
    process = WorkerProcess(
        {**env, "WORKERS": "2", "VESPER_SHUTDOWN_GRACE": "0s", "VESPER_TEST_LEDGER": str(ledger)},
        tmp_path / "worker.log",
    )
    processes.append(process)
    wait_until(lambda: len(starts(read_ledger(ledger))) == 2, timeout=30, what="jobs to start")
    _cut_then_sigterm(url, process, random.Random())
    app = App(env)
    try:
        after = [app.container.get_job()(job.id) for job in jobs]
    finally:
        app.close()
    released = [(j.status, j.attempts) for j in after]
    assert released == [(Status.PENDING, 0)] * 2, process.output()[-2000:]
    assert _registered(url) == []

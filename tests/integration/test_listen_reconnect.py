"""PostgreSQL: a worker whose LISTEN connection is killed reconnects and LISTENs again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.integration.harness import WorkerProcess, read_ledger, starts, wait_until
from vesper.entrypoints.app import App
from vesper.testing import postgres as pg

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _listen_backends(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE application_name = 'vesper-listen' AND datname = current_database()"
                )
            )
            return [row.pid for row in rows]
    finally:
        engine.dispose()


def _terminate(url: str, pids: list[int]) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for pid in pids:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        engine.dispose()


def test_killed_listen_connection_is_reestablished_and_wakes_the_worker(
    postgres_database: str, tmp_path: Path
) -> None:
    pg.truncate(postgres_database)
    ledger = tmp_path / "ledger"
    env = {
        "VESPER_STORAGE": "postgres",
        "VESPER_DATABASE_URL": postgres_database,
        "VESPER_POLL_INTERVAL": "60s",  # only a notification can wake it in time
        "VESPER_TEST_LEDGER": str(ledger),
        "WORKERS": "2",
    }
    producer = App(env)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        old = wait_until(
            lambda: _listen_backends(postgres_database), timeout=30, what="the LISTEN connection"
        )
        producer.enqueue("record")
        wait_until(lambda: len(starts(read_ledger(ledger))) == 1, timeout=15, what="first job")

        _terminate(postgres_database, old)
        new = wait_until(
            lambda: [p for p in _listen_backends(postgres_database) if p not in old],
            timeout=30,
            what="a new LISTEN connection",
        )
        assert new
        time.sleep(0.5)  # the worker is idle again, its next poll a minute away
        producer.enqueue("record")
        wait_until(
            lambda: len(starts(read_ledger(ledger))) == 2,
            timeout=15,
            what="the job submitted after the reconnect (woken by NOTIFY, not the poll)",
        )
        assert "LISTEN connection lost" in worker.output()
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        worker.stop()
        producer.close()

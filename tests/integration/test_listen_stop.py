"""PostgreSQL: the LISTEN listener stops at once (a SIGTERM'd worker does not wait out
its check interval), and still wakes on every NOTIFY and after a lost connection."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from vesper.adapters.sql.notify import CHANNEL, PostgresJobListener, libpq_conninfo

pytestmark = pytest.mark.postgres


def _execute(url: str, sql: str) -> None:
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        conn.execute(sql)


def test_stop_is_prompt_and_notifications_still_wake(postgres_database: str) -> None:
    woken = threading.Semaphore(0)
    listener = PostgresJobListener(
        postgres_database, woken.release, check_interval=30.0, max_backoff=0.2
    ).start()
    try:
        assert listener.up.wait(10)
        assert woken.acquire(timeout=5)  # the catch-up signal after connecting
        _execute(postgres_database, f"NOTIFY {CHANNEL}")
        assert woken.acquire(timeout=2), "no wake-up for a NOTIFY"
        _execute(
            postgres_database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'vesper-listen' AND datname = current_database()",
        )
        assert woken.acquire(timeout=10), "no catch-up signal after reconnecting"
        assert listener.reconnects >= 1
        _execute(postgres_database, f"NOTIFY {CHANNEL}")
        assert woken.acquire(timeout=2), "no wake-up for a NOTIFY after reconnecting"
    finally:
        started = time.monotonic()
        listener.stop()
        took = time.monotonic() - started
    assert took < 0.5, f"stop() took {took:.2f}s (check interval 30 s)"
    assert not listener.connected()

"""SQLite has no NOTIFY: its store's notifier (a datagram to each worker process's
socket in `<file>-wake/`) wakes a worker in another process at once, not at its poll."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tests.integration.harness import WorkerProcess, read_ledger, starts, wait_until
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow

POLL_S = 30.0


def test_a_worker_process_picks_up_a_job_submitted_by_another_process_before_its_poll(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    database = tmp_path / "q.db"
    env = {
        "VESPER_STORAGE": "sqlite",
        "VESPER_DATABASE_URL": f"sqlite:///{database}",
        "VESPER_POLL_INTERVAL": f"{POLL_S:g}s",  # a job found by polling waits up to 30 s
        "VESPER_TEST_LEDGER": str(ledger),
    }
    producer = App(env)  # this process
    producer.container.store()  # the schema, before the worker opens the file
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: "started" in worker.output(), timeout=30, what="the worker")
        wake = database.with_name(f"{database.name}-wake")
        wait_until(lambda: list(wake.glob("*.sock")), timeout=10, what="the worker's socket")
        time.sleep(1.0)  # its first claim found nothing: it now waits for a wake-up
        latencies = []
        for index in range(3):
            producer.enqueue("record", {})
            submitted = time.monotonic()
            wait_until(
                lambda n=index + 1: len(starts(read_ledger(ledger))) >= n,
                timeout=POLL_S + 10,
                interval=0.01,
                what="the job to start",
            )
            latencies.append(time.monotonic() - submitted)
        print(f"picked up after {[f'{s:.3f}' for s in latencies]} s (poll interval {POLL_S:g} s)")
        assert max(latencies) < POLL_S / 6, latencies
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert list(wake.glob("*.sock")) == [], "a graceful stop removes its socket"
    finally:
        producer.close()
        worker.stop()


def test_a_job_enqueued_in_the_callers_transaction_wakes_another_process_at_the_commit(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    database = tmp_path / "q.db"
    env = {
        "VESPER_STORAGE": "sqlite",
        "VESPER_DATABASE_URL": f"sqlite:///{database}",
        "VESPER_POLL_INTERVAL": f"{POLL_S:g}s",
        "VESPER_TEST_LEDGER": str(ledger),
    }
    producer = App(env)
    producer.container.store()
    engine = create_engine(f"sqlite:///{database}")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: "started" in worker.output(), timeout=30, what="the worker")
        time.sleep(1.0)  # its first claim found nothing: it now waits for a wake-up
        with Session(engine) as session:
            producer.enqueue("record", connection=session)
            time.sleep(0.5)  # uncommitted: nothing may wake the worker into finding it
            assert starts(read_ledger(ledger)) == []
            session.commit()
            committed = time.monotonic()
        wait_until(
            lambda: starts(read_ledger(ledger)),
            timeout=POLL_S + 10,
            interval=0.01,
            what="the job to start",
        )
        latency = time.monotonic() - committed
        print(f"commit -> start in another process: {latency * 1000:.1f} ms")
        assert latency < POLL_S / 6, latency
    finally:
        engine.dispose()
        producer.close()
        worker.stop()

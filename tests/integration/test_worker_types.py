"""A fleet split by job type: each `vesper worker` process claims only the types it has
consumers for, on a shared SQLite file and a shared PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import FAST, WorkerProcess, read_ledger, starts, wait_until
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow

APPS = "tests.integration.apps.by_type"


def test_each_process_runs_only_the_types_it_has_consumers_for(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = {**store_env, **FAST, "WORKERS": "2", "VESPER_TEST_LEDGER": str(ledger)}
    fleet = queue_app.container.get_fleet()
    get = queue_app.container.get_job()
    only_a = WorkerProcess(env, tmp_path / "a.log", app=f"{APPS}:only_a")
    only_b: WorkerProcess | None = None
    try:
        wait_until(lambda: fleet().processes, timeout=30, what="the 'a' process to register")
        a_jobs = queue_app.enqueue_many([JobRequest(type="a") for _ in range(5)])
        b_jobs = queue_app.enqueue_many([JobRequest(type="b") for _ in range(5)])
        nobody = queue_app.enqueue("c")
        # the "a" process has claimed and run its jobs, with the "b"s due beside them
        wait_until(
            lambda: all(get(j.id).status is Status.DONE for j in a_jobs),
            timeout=30,
            what="the 'a' jobs to be done",
        )
        only_b = WorkerProcess(env, tmp_path / "b.log", app=f"{APPS}:only_b")
        wait_until(
            lambda: all(get(j.id).status in (Status.DONE, Status.DLQ) for j in b_jobs),
            timeout=60,
            what="the 'b' jobs to end",
        )
        ended = [get(j.id) for j in (*a_jobs, *b_jobs)]
        assert [(j.status, j.attempts, j.retries) for j in ended] == [(Status.DONE, 1, 0)] * 10, [
            f"{j.type} {j.status.value} retries={j.retries} error={j.error!r}" for j in ended
        ]
        by_pid = {e["job_id"]: e["pid"] for e in starts(read_ledger(ledger))}
        ran = [(j.type, by_pid.get(str(j.id))) for j in ended]
        assert ran == [("a", only_a.pid)] * 5 + [("b", only_b.pid)] * 5
        assert len(starts(read_ledger(ledger))) == 10, "each job ran once"
        # no live process has a consumer for "c": it waits, never attempted
        assert get(nobody.id) == nobody
    finally:
        for process in (only_a, only_b):
            if process is not None:
                process.stop()

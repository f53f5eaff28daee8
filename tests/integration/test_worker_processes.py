"""Worker processes on a shared SQLite file and a shared PostgreSQL database.

Each test starts real `vesper worker` processes running tests/integration/apps/ledger.py,
whose consumers write an fsynced ledger per process.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    FAST,
    WorkerProcess,
    read_ledger,
    starts,
    wait_until,
    workers,
)
from vesper.domain.job import JobRecord
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow


def _counts(app: App) -> dict[Status, int]:
    return app.container.get_stats()().by_status


def _enqueue(app: App, requests: list[JobRequest]) -> None:
    for start in range(0, len(requests), 500):
        app.enqueue_many(requests[start : start + 500])


def _story(jobs: set[str], ledger: list[dict[str, Any]], procs: list[WorkerProcess]) -> str:
    """What a failure needs to be explained: the ledger lines of the jobs that ran more
    than once, and every warning the workers logged."""
    lines = [f"{len(jobs)} job(s) ran more than once without any fault:"]
    lines += [str(e) for e in ledger if e["job_id"] in jobs]
    for proc in procs:
        lines += [
            f"pid {proc.popen.pid}: {line}"
            for line in proc.output().splitlines()
            if "WARNING" in line or "ERROR" in line
        ]
    return "\n".join(lines[:80])


def test_three_processes_drain_3000_jobs_each_exactly_once(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    _enqueue(queue_app, [JobRequest(type="record", priority=i % 11) for i in range(3000)])
    env = {**store_env, **FAST, "WORKERS": "8", "VESPER_TEST_LEDGER": str(ledger)}
    with workers(3, env, tmp_path) as procs:
        wait_until(
            lambda: _counts(queue_app)[Status.DONE] == 3000, timeout=180, what="3000 jobs done"
        )
        executions = Counter(e["job_id"] for e in starts(read_ledger(ledger)))
        assert len(executions) == 3000
        twice = {job_id for job_id, n in executions.items() if n > 1}
        assert not twice, _story(twice, read_ledger(ledger), procs)
        assert len({e["pid"] for e in starts(read_ledger(ledger))}) == 3, "every process took work"
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) == 0, proc.output()[-2000:]
    assert queue_app.container.get_fleet()().processes == ()


def test_kill_9_of_one_process_loses_nothing_and_reruns_only_its_jobs(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    total = 120
    _enqueue(queue_app, [JobRequest(type="record", payload={"sleep": 0.5}) for _ in range(total)])
    env = {**store_env, **FAST, "WORKERS": "4", "VESPER_TEST_LEDGER": str(ledger)}
    with workers(3, env, tmp_path) as procs:
        victim = procs[0]

        def victim_has_open_jobs() -> bool:
            entries = read_ledger(ledger)
            mine = [e for e in entries if e["pid"] == victim.pid]
            opened = {e["job_id"] for e in mine if e["event"] == "start"}
            closed = {e["job_id"] for e in mine if e["event"] == "end"}
            return len(opened - closed) >= 2

        wait_until(victim_has_open_jobs, timeout=60, what="the victim to run jobs")
        victim.signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        entries = read_ledger(ledger)
        mine = [e for e in entries if e["pid"] == victim.pid]
        in_flight = {e["job_id"] for e in mine if e["event"] == "start"} - {
            e["job_id"] for e in mine if e["event"] == "end"
        }

        wait_until(
            lambda: _counts(queue_app)[Status.DONE] == total, timeout=120, what="all jobs done"
        )
        recovered_after = time.monotonic() - killed_at
        counts = _counts(queue_app)
        assert counts[Status.PROCESSING] == 0
        executions = Counter(e["job_id"] for e in starts(read_ledger(ledger)))
        rerun = {job_id for job_id, n in executions.items() if n > 1}
        assert rerun <= in_flight, "only the killed process's jobs may run twice"
        for job_id in in_flight:
            rerun_by = {e["pid"] for e in starts(read_ledger(ledger)) if e["job_id"] == job_id} - {
                victim.pid
            }
            assert rerun_by, f"job {job_id} of the killed process never ran again"
        # lease 3s + poll + heartbeat: well within the generous bound
        assert recovered_after < 60
        wait_until(
            lambda: (
                victim.popen.pid not in {p.pid for p in queue_app.container.get_fleet()().processes}
            ),
            timeout=30,
            what="the dead process to be reaped",
        )
        for proc in procs[1:]:
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


def test_sigterm_lets_running_jobs_finish_and_exits_0(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    running = 3
    long_jobs = [queue_app.enqueue("record", {"sleep": 2}) for _ in range(running)]
    env = {
        **store_env,
        **FAST,
        "WORKERS": str(running),
        "VESPER_SHUTDOWN_GRACE": "20s",
        "VESPER_TEST_LEDGER": str(ledger),
    }
    with workers(1, env, tmp_path) as procs:
        wait_until(
            lambda: len(starts(read_ledger(ledger))) == running, timeout=60, what="jobs to start"
        )
        _enqueue(queue_app, [JobRequest(type="record") for _ in range(10)])  # stay queued
        sent = time.monotonic()
        procs[0].signal(signal.SIGTERM)
        assert procs[0].wait(timeout=20) == 0, procs[0].output()[-2000:]
        assert time.monotonic() - sent < 20
    ended = [queue_app.container.get_job()(job.id) for job in long_jobs]
    assert all(job.status is Status.DONE for job in ended), _ending(ended, ledger, procs[0])
    counts = _counts(queue_app)
    assert counts[Status.DONE] == running
    assert counts[Status.PROCESSING] == 0
    assert counts[Status.PENDING] == 10
    assert queue_app.container.get_fleet()().processes == ()


def _ending(jobs: list[JobRecord], ledger: Path, proc: WorkerProcess) -> str:
    """Why a job that was running at SIGTERM did not end done: its row, its ledger lines,
    and the worker's log from the signal on."""
    lines = [
        f"{job.id}: status={job.status.value} attempts={job.attempts} retries={job.retries} "
        f"worker={job.worker_id} error={job.error!r}"
        for job in jobs
    ]
    ids = {str(job.id) for job in jobs}
    lines += [str(e) for e in read_ledger(ledger) if e["job_id"] in ids]
    log_lines = proc.output().splitlines()
    signalled = next((i for i, line in enumerate(log_lines) if "SIGTERM" in line), 0)
    lines += log_lines[max(signalled - 20, 0) :]
    return "\n".join(lines[:120])


def test_sigterm_past_grace_releases_unfinished_jobs_to_pending(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    jobs = [queue_app.enqueue("record", {"sleep": 30}) for _ in range(2)]
    env = {
        **store_env,
        **FAST,
        "WORKERS": "2",
        "VESPER_SHUTDOWN_GRACE": "1s",
        "VESPER_TEST_LEDGER": str(ledger),
    }
    with workers(1, env, tmp_path) as procs:
        wait_until(lambda: len(starts(read_ledger(ledger))) == 2, timeout=60, what="jobs to start")
        procs[0].signal(signal.SIGTERM)
        assert procs[0].wait(timeout=15) == 0, procs[0].output()[-2000:]
    for job in jobs:
        after = queue_app.container.get_job()(job.id)
        assert after.status is Status.PENDING
        assert after.worker_id is None
        assert after.attempts == 0, "a graceful release refunds the attempt"
        assert after.retries == 0


def test_one_slot_runs_jobs_in_priority_order_fifo_within_priority(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    priorities = [(i * 7) % 11 for i in range(40)]
    submitted = [
        queue_app.enqueue("record", {"n": n}, priority=p) for n, p in enumerate(priorities)
    ]
    expected = [
        str(job.id)
        for job in sorted(submitted, key=lambda j: (-j.priority, j.run_at, j.created_at))
    ]
    env = {**store_env, **FAST, "WORKERS": "1", "VESPER_TEST_LEDGER": str(ledger)}
    with workers(1, env, tmp_path) as procs:
        wait_until(lambda: len(starts(read_ledger(ledger))) == 40, timeout=60, what="40 starts")
        procs[0].signal(signal.SIGTERM)
        procs[0].wait(timeout=20)
    assert [e["job_id"] for e in starts(read_ledger(ledger))] == expected


def test_failing_consumer_retries_with_growing_delays_then_dlq(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    job = queue_app.enqueue("fail", max_retries=3)
    env = {
        **store_env,
        **FAST,
        "VESPER_RETRY_JITTER": "0",
        "VESPER_RETRY_BASE": "300ms",
        "VESPER_POLL_INTERVAL": "100ms",
        "WORKERS": "1",
        "VESPER_TEST_LEDGER": str(ledger),
    }
    with workers(1, env, tmp_path) as procs:
        wait_until(
            lambda: queue_app.container.get_job()(job.id).status is Status.DLQ,
            timeout=60,
            what="the job to reach dlq",
        )
        procs[0].signal(signal.SIGTERM)
        procs[0].wait(timeout=20)
    final = queue_app.container.get_job()(job.id)
    assert final.retries == 3
    assert final.attempts == 4
    assert final.error == "RuntimeError: always fails (attempt 4)"
    times = [e["t"] for e in starts(read_ledger(ledger))]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < gaps[1] < gaps[2], f"backoff gaps should grow: {gaps}"
    assert gaps[0] >= 0.3  # base * 2**0

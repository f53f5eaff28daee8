"""The fault tests' consumers: each execution is written to an fsynced JSONL ledger.

Each worker process appends to $VESPER_TEST_LEDGER/<pid>.jsonl: `start` before any
work, then `end` (the consumer returned normally) or `abort` (it saw the job stopping:
lease lost or shutdown). Every line carries the claim's lease token, worker id and DB
claim time (`claimed_at`, the store's clock), and `mono`, CLOCK_MONOTONIC in ns, which
is one clock for every process on the machine (and real under libfaketime with
DONT_FAKE_MONOTONIC=1), so executions of different processes can be compared in time.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import vesper
from tests.integration.apps import ledger

app = vesper.App()


def write(event: str, job: vesper.Job, **extra: Any) -> None:
    """The integration ledger's line, with what the fault checker needs of the claim."""
    record = job.record
    ledger.write(
        event,
        job,
        worker_id=record.worker_id,
        token=str(record.lease.token) if record.lease else None,
        claimed_at=record.started_at.isoformat() if record.started_at else None,
        run_at=record.run_at.isoformat(),
        mono=time.monotonic_ns(),
        **extra,
    )


def _work(job: vesper.Job) -> None:
    if job.attempt == 1 and "sleep_first" in job.payload:
        low = high = float(job.payload["sleep_first"])  # the first attempt runs long
    else:
        low = float(job.payload.get("sleep", 0))
        high = float(job.payload.get("sleep_max", low))
    seconds = random.uniform(low, high) if high > low else low
    if seconds > 0 and job.wait_stopping(seconds):
        write("abort", job, reason=job.stop_reason)
        return
    write("end", job)


@app.consumer("record")
def record(job: vesper.Job) -> None:
    write("start", job)
    _work(job)


@app.consumer("fail")
def fail(job: vesper.Job) -> None:
    write("start", job)
    write("end", job, failed=True)
    raise RuntimeError(f"always fails (attempt {job.attempt})")


@app.consumer("flaky")
def flaky(job: vesper.Job) -> None:
    """Fails its first `fail_times` attempts, then succeeds."""
    write("start", job)
    if job.attempt <= int(job.payload.get("fail_times", 2)):
        write("end", job, failed=True)
        raise RuntimeError(f"flaky (attempt {job.attempt})")
    write("end", job)


@app.consumer("selfkill")
def selfkill(job: vesper.Job) -> None:
    """Kills its own process (kill -9): only lease expiry can end the attempt."""
    write("start", job)
    os.kill(os.getpid(), signal.SIGKILL)


@app.consumer("nonretry")
def nonretry(job: vesper.Job) -> None:
    write("start", job)
    write("end", job, failed=True)
    raise vesper.NonRetryable("this job can never succeed")

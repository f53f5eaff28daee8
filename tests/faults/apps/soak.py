"""The soak's consumers (benchmarks/soak.py): every execution goes to the fault ledger.

`work` returns a result naming its own claim (token and claim time), so the checker can
tell which attempt's result the store kept; `flaky` fails its first attempts, `fail`
always fails (dlq, then the soak retries it), `slow` runs for seconds and stops when
asked (a running job cancelled, a lease lost), `snooze` snoozes once then succeeds,
`stoppable` and `stoppable_async` run until told to stop (cancels of running jobs).
Consumers of features that are not on every branch register only where the feature
exists (see tests/faults/soak/pieces.py).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import vesper
from tests.faults.apps.ledger import write

app = vesper.App()


def _claim(job: vesper.Job) -> dict[str, Any]:
    record = job.record
    return {
        "token": str(record.lease.token) if record.lease else None,
        "claimed_at": record.started_at.isoformat() if record.started_at else None,
        "attempt": job.attempt,
    }


@app.consumer("work")
def work(job: vesper.Job) -> dict[str, Any]:
    write("start", job)
    low = float(job.payload.get("sleep", 0))
    seconds = random.uniform(low, max(low, float(job.payload.get("sleep_max", 0.02))))
    if seconds and job.wait_stopping(seconds):
        write("abort", job, reason=job.stop_reason)
        job.raise_if_stopping()
    write("end", job)
    return _claim(job)


@app.consumer("flaky")
def flaky(job: vesper.Job) -> dict[str, Any]:
    write("start", job)
    if job.attempt <= int(job.payload.get("fail_times", 1)):
        write("end", job, failed=True)
        raise RuntimeError(f"flaky (attempt {job.attempt})")
    write("end", job)
    return _claim(job)


@app.consumer("fail")
def fail(job: vesper.Job) -> None:
    write("start", job)
    write("end", job, failed=True)
    raise RuntimeError(f"always fails (attempt {job.attempt})")


@app.consumer("slow")
def slow(job: vesper.Job) -> dict[str, Any]:
    write("start", job)
    if job.wait_stopping(random.uniform(1.0, 3.0)):
        write("abort", job, reason=job.stop_reason)
        job.raise_if_stopping()
    write("end", job)
    return _claim(job)


@app.consumer("snooze")
def snooze(job: vesper.Job) -> dict[str, Any]:
    """Snoozes on its first attempt (while the store counts no snooze), then succeeds.
    The snoozing attempt's line says `failed` so that the checker reads the next start
    as a scheduled run, not a re-execution (as a failure's retry)."""
    write("start", job)
    if job.record.snoozes == 0:
        seconds = float(job.payload.get("snooze", 1.0))
        write("end", job, failed=True, snoozed=seconds)
        raise vesper.Snooze(seconds)
    write("end", job)
    return _claim(job)


_PAUSE = threading.Event()  # never set: a timed wait between two looks at job.stopping


@app.consumer("stoppable")
def stoppable(job: vesper.Job) -> dict[str, Any]:
    """A sync consumer that polls `job.stopping` (as README asks of long ones) for up to
    `seconds`: a cancel of the running job stops it within a heartbeat and a poll."""
    write("start", job)
    deadline = time.monotonic() + float(job.payload.get("seconds", 2.0))
    while time.monotonic() < deadline:
        if job.stopping:
            write("abort", job, reason=job.stop_reason)
            job.raise_if_stopping()
        # not time.sleep: under libfaketime (the skewed workers) it raised EINVAL
        _PAUSE.wait(0.05)
    write("end", job)
    return _claim(job)


@app.consumer("stoppable_async")
async def stoppable_async(job: vesper.Job) -> dict[str, Any]:
    """The async one: a cancel of the running job cancels its task mid-sleep."""
    write("start", job)
    try:
        await asyncio.sleep(float(job.payload.get("seconds", 2.0)))
    except asyncio.CancelledError:
        write("abort", job, reason=job.stop_reason)
        raise
    write("end", job)
    return _claim(job)


# Issue 17: a schedule every second (one job per tick across the four workers)
SCHEDULE = "soak-every-second"
if hasattr(app, "periodic"):

    @app.periodic("* * * * * *", name=SCHEDULE)
    @app.consumer("tick")
    def tick(job: vesper.Job) -> dict[str, Any]:
        write("start", job)
        write("end", job)
        return _claim(job)

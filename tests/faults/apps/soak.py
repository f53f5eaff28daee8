"""The soak's consumers (benchmarks/soak.py): every execution goes to the fault ledger.

`work` returns a result naming its own claim (token and claim time), so the checker can
tell which attempt's result the store kept; `flaky` fails its first attempts, `fail`
always fails (dlq, then the soak retries it), `slow` runs for seconds and stops when
asked (a running job cancelled, a lease lost). Consumers of features that are not on
every branch register only where the feature exists (see tests/faults/soak/pieces.py).
"""

from __future__ import annotations

import random
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
    seconds = random.uniform(0, float(job.payload.get("sleep_max", 0.02)))
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


# Issue 17: a schedule every second (one job per tick across the four workers)
SCHEDULE = "soak-every-second"
if hasattr(app, "periodic"):

    @app.periodic("* * * * * *", name=SCHEDULE)
    @app.consumer("tick")
    def tick(job: vesper.Job) -> dict[str, Any]:
        write("start", job)
        write("end", job)
        return _claim(job)

"""The dashboard's browser tests' application: `ok` jobs succeed, a `flaky` job fails for
good on its first attempt (to dlq) and succeeds once retried; no consumer takes `hold`
jobs, so they stay pending for the tests to look at and cancel. An `answer` job returns
a result; a `long` job runs until it is cancelled (a minute at most). One schedule, due
once a year, for the schedules page."""

from __future__ import annotations

import asyncio
from typing import Any

import vesper

app = vesper.App()
app.periodic("0 0 1 1 *", type="ok", name="yearly")


@app.consumer("ok")
def ok(job: vesper.Job) -> None:
    return None


@app.consumer("flaky")
def flaky(job: vesper.Job) -> None:
    if job.attempt == 1:
        raise vesper.NonRetryable("first attempts of flaky jobs fail on purpose")


@app.consumer("answer")
def answer(job: vesper.Job) -> dict[str, Any]:
    return {"answer": 42}


@app.consumer("long")
async def long(job: vesper.Job) -> None:
    await asyncio.sleep(60)  # the cancel stops it first

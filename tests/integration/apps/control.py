"""Consumers that are cancelled while running, snooze, ask for a retry after a delay,
or follow a retry policy; each writes the ledger of tests/integration/apps/ledger.py."""

from __future__ import annotations

import asyncio
import time

import vesper
from tests.integration.apps.ledger import write

app = vesper.App()

RUN_FOR = 60.0  # seconds a cancelled consumer would run if nothing stopped it


@app.consumer("sleep_async")
async def sleep_async(job: vesper.Job) -> None:
    write("start", job)
    try:
        await asyncio.sleep(RUN_FOR)
    except asyncio.CancelledError:
        write("stopped", job, reason="async cancelled")
        raise
    write("end", job)


@app.consumer("poll_sync")
def poll_sync(job: vesper.Job) -> None:
    write("start", job)
    deadline = time.monotonic() + RUN_FOR
    while not job.stopping and time.monotonic() < deadline:
        time.sleep(0.02)
    write("stopped" if job.stopping else "end", job, reason=job.stop_reason)


@app.consumer("quick")
def quick(job: vesper.Job) -> None:
    write("start", job)


@app.consumer("snoozer")
def snoozer(job: vesper.Job) -> None:
    write("start", job)
    if job.record.snoozes < 2:
        raise vesper.Snooze(0.3)


@app.consumer("retry_after")
def retry_after(job: vesper.Job) -> None:
    write("start", job)
    if job.retries == 0:
        raise vesper.RetryAfter(1.5, "rate limited")


class Transient(Exception):
    pass


class Fatal(Exception):
    pass


@app.consumer(
    "picky",
    max_retries=1,
    backoff=vesper.Backoff(base=0.1, cap=0.1),
    retry_on=(Transient, Fatal),
    discard_on=(Fatal,),
)
def picky(job: vesper.Job) -> None:
    write("start", job)
    raise {"transient": Transient, "fatal": Fatal, "other": ValueError}[job.payload["raise"]](
        "boom"
    )

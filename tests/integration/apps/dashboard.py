"""The dashboard's browser tests' application: `ok` jobs succeed, a `flaky` job fails for
good on its first attempt (to dlq) and succeeds once retried; no consumer takes `hold`
jobs, so they stay pending for the tests to look at and cancel."""

from __future__ import annotations

import vesper

app = vesper.App()


@app.consumer("ok")
def ok(job: vesper.Job) -> None:
    return None


@app.consumer("flaky")
def flaky(job: vesper.Job) -> None:
    if job.attempt == 1:
        raise vesper.NonRetryable("first attempts of flaky jobs fail on purpose")


# a schedule for the schedules page (midnight: it fires no job during a test)
app.periodic("0 0 * * *", type="ok", name="nightly-ok")

"""A test application that declares one periodic schedule, `tick`, every second by
default (VESPER_TEST_CRON), of type `beat`, whose consumer does nothing."""

from __future__ import annotations

import os

import vesper

app = vesper.App()


@app.periodic(os.environ.get("VESPER_TEST_CRON", "*/1 * * * * *"), name="tick")
@app.consumer("beat")
def beat(job: vesper.Job) -> None:
    """The job itself is what the tests count (by its key)."""

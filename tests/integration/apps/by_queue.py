"""A fleet split by queue: `mail` runs types "email" and "report", `media` runs type
"media"; each consumer writes the ledger of tests/integration/apps/ledger.py with the
job's queue, and sleeps `payload["sleep"]` seconds between its start and end lines."""

from __future__ import annotations

import vesper
from tests.integration.apps.ledger import write

mail = vesper.App()
media = vesper.App()


def _run(job: vesper.Job) -> None:
    record = job.record
    write("start", job, queue=record.queue, key=record.concurrency_key)
    seconds = float(job.payload.get("sleep", 0))
    if seconds:
        job.wait_stopping(seconds)
    write("end", job, queue=record.queue, key=record.concurrency_key)


mail.consumer("email", queue="email")(_run)
mail.consumer("report")(_run)
media.consumer("media", queue="media")(_run)

"""The example application that `./dev serve` runs: one consumer per job type of the
original README's curl examples, and a catch-all for any other type.

    vesper serve --app examples.app:app
"""

from __future__ import annotations

import asyncio
import logging
import time

import vesper

log = logging.getLogger("examples")

app = vesper.App()


@app.consumer("resize_image")
def resize_image(job: vesper.Job) -> None:
    """A sync consumer: runs in a thread, so blocking calls are fine."""
    width = job.payload.get("width", 0)
    time.sleep(0.05)  # stands in for real work
    log.info("resized %s to width %s", job.payload.get("image_url"), width)


@app.consumer("send_welcome_email")
async def send_welcome_email(job: vesper.Job) -> None:
    """An async consumer: runs on the event loop."""
    await asyncio.sleep(0.02)
    log.info("sent a welcome email to %s", job.payload.get("email"))


@app.consumer("fraud_alert", timeout=10)
def fraud_alert(job: vesper.Job) -> None:
    if job.payload.get("risk_score", 0) > 1:
        raise vesper.NonRetryable("risk_score above 1 is not a probability")
    log.info("raised a fraud alert for %s", job.payload.get("transaction_id"))


@app.consumer()
def everything_else(job: vesper.Job) -> None:
    """The catch-all: every type without a consumer of its own (cleanup_temp_files, ...)."""
    log.info("handled %s job %s", job.type, job.id)


if __name__ == "__main__":
    app.run()

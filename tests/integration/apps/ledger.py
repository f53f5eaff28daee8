"""A test application whose consumers write an execution ledger.

Each worker process appends JSON lines to $VESPER_TEST_LEDGER/<pid>.jsonl, flushed and
fsynced, so that a test can count executions even across kill -9.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import vesper

app = vesper.App()


def _ledger() -> Any:
    directory = Path(os.environ["VESPER_TEST_LEDGER"])
    directory.mkdir(parents=True, exist_ok=True)
    return (directory / f"{os.getpid()}.jsonl").open("a", encoding="utf-8")


_file = None


def write(event: str, job: vesper.Job, **extra: Any) -> None:
    global _file  # noqa: PLW0603 (one ledger file per process, opened lazily)
    if _file is None:
        _file = _ledger()
    line = {
        "event": event,
        "job_id": str(job.id),
        "type": job.type,
        "priority": job.priority,
        "attempt": job.attempt,
        "pid": os.getpid(),
        "t": time.time(),
        **extra,
    }
    _file.write(json.dumps(line) + "\n")
    _file.flush()
    os.fsync(_file.fileno())


@app.consumer("record")
def record(job: vesper.Job) -> None:
    write("start", job)
    seconds = float(job.payload.get("sleep", 0))
    if seconds:
        job.wait_stopping(seconds)
    write("end", job)


@app.consumer("fail")
def fail(job: vesper.Job) -> None:
    write("start", job)
    raise RuntimeError(f"always fails (attempt {job.attempt})")

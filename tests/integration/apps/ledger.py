"""A test application whose consumers write an execution ledger.

Each worker process appends JSON lines to $VESPER_TEST_LEDGER/<pid>.jsonl, flushed and
fsynced, so that a test can count executions even across kill -9.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import vesper

app = vesper.App()


_lock = threading.Lock()
_fd: int | None = None


def append(line: dict[str, Any]) -> None:
    """Append `line` to this process's ledger, durably; safe from any consumer thread.

    One O_APPEND write per line: lines of concurrent consumers never interleave, and no
    buffered file object is shared between threads (a lazily opened one, raced by the
    first jobs of a batch, was opened twice and the loser's descriptor closed under
    another thread's fsync: the consumer failed with EBADF and its job was retried).
    """
    global _fd  # noqa: PLW0603 (one ledger file per process, opened lazily)
    with _lock:
        if _fd is None:
            directory = Path(os.environ["VESPER_TEST_LEDGER"])
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{os.getpid()}.jsonl"
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fd = _fd
    os.write(fd, (json.dumps(line) + "\n").encode())
    os.fsync(fd)


def write(event: str, job: vesper.Job, **extra: Any) -> None:
    append(
        {
            "event": event,
            "job_id": str(job.id),
            "type": job.type,
            "priority": job.priority,
            "attempt": job.attempt,
            "pid": os.getpid(),
            "t": time.time(),
            **extra,
        }
    )


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

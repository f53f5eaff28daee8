"""What every driver shares: the command line, timing, the ledger. Standard library only:
the peers' drivers import it from their own venv.

A driver is run as `python <driver>.py COMMAND --url URL [options]` and prints one JSON
object on its last stdout line. Commands:
    setup                 create the schema (idempotent)
    reset                 empty the queue tables
    enqueue-single        --jobs N: N library calls, one transaction each -> {"seconds"}
    enqueue-batch         --jobs N --chunk C: through the batch API -> {"seconds"}
    enqueue-concurrent    --jobs N --producers P: N single enqueues shared by P concurrent
                          producers (threads, or tasks on a pool) -> {"seconds"}
    fill                  --jobs N: queue N jobs -> {"committed_at": wall clock}
    worker                --concurrency C --ready PATH [--ledger PATH]: run until SIGTERM
    produce               --jobs N --rate R: one at a time -> {"enqueued": {n: wall clock}}
    flow                  --rate R --seconds S (vesper only, W6s): R jobs a second in
                          small batches for S seconds -> {"submitted"}
    claim-latency         --jobs N --limit L (vesper only, W6): queue N jobs, then claim
                          them L at a time through the store -> {"claims_ms": [...]}
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JOB_TYPE = "bench"
CHUNK = 10_000  # W2: one batch call of 10,000, as the peers' batch APIs take it
PRODUCERS = 16  # W1c: concurrent producers


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--producers", type=int, default=PRODUCERS)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ready")
    parser.add_argument("--ledger")
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def chunks(total: int, size: int) -> list[range]:
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


def shares(total: int, parts: int) -> list[range]:
    """`range(total)` cut into `parts` interleaved shares (one per producer)."""
    return [range(start, total, parts) for start in range(parts)]


def touch(path: str | None) -> None:
    if path:
        Path(path).write_text(str(os.getpid()))


class Ledger:
    """Consumer start times: one `n wall-clock` line per job, appended atomically."""

    def __init__(self, path: str | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def start(self, n: object) -> None:
        if self._fd is not None:
            os.write(self._fd, f"{n} {time.time()!r}\n".encode())


def paced(jobs: int, rate: float, enqueue: Callable[[int], None]) -> dict[str, float]:
    """Call `enqueue(n)` for n in range(jobs) at about `rate` per second; when each returned."""
    enqueued: dict[str, float] = {}
    interval = 1.0 / rate
    next_at = time.monotonic()
    deadline = next_at + jobs / rate * 3 + 30  # bounded even when the store stalls
    for n in range(jobs):
        next_at += interval
        enqueue(n)
        enqueued[str(n)] = time.time()
        if time.monotonic() > deadline:
            break
        time.sleep(max(0.0, next_at - time.monotonic()))
    return enqueued


async def apaced(jobs: int, rate: float, enqueue: Callable[[int], Any]) -> dict[str, float]:
    """`paced` for an async enqueue."""
    import asyncio  # noqa: PLC0415

    enqueued: dict[str, float] = {}
    interval = 1.0 / rate
    next_at = time.monotonic()
    deadline = next_at + jobs / rate * 3 + 30
    for n in range(jobs):
        next_at += interval
        await enqueue(n)
        enqueued[str(n)] = time.time()
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return enqueued

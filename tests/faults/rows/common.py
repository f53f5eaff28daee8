"""Helpers the rows share: scales, enqueueing, waiting for a drain."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tests.faults.lab import Lab, RowResult, wait_for
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App


def scaled(lab: Lab, ci: Any, full: Any) -> Any:
    return full if lab.scale == "full" else ci


def enqueue(app: App, requests: Sequence[JobRequest]) -> None:
    for start in range(0, len(requests), 500):
        app.enqueue_many(requests[start : start + 500])


def status_counts(lab: Lab, database: str) -> dict[str, int]:
    rows = lab.need_cluster().execute(
        "SELECT status, count(*) FROM vesper_jobs GROUP BY status", database=database
    )
    return dict(rows)


def drained(lab: Lab, database: str, total: int) -> Callable[[], bool]:
    def check() -> bool:
        counts = status_counts(lab, database)
        return sum(counts.get(s, 0) for s in ("done", "dlq", "cancelled")) >= total

    return check


def wait_drained(lab: Lab, result: RowResult, database: str, total: int, timeout: float) -> float:
    started = time.monotonic()
    if wait_for(drained(lab, database, total), timeout=timeout, interval=0.25) is None:
        result.failures.append(
            f"not drained in {timeout:.0f}s: {status_counts(lab, database)} of {total}"
        )
    return time.monotonic() - started


def timed(row: Callable[..., RowResult]) -> Callable[..., RowResult]:
    def run(*args: Any, **kwargs: Any) -> RowResult:
        started = time.monotonic()
        result = row(*args, **kwargs)
        result.seconds = time.monotonic() - started
        return result

    run.__name__ = row.__name__
    run.__doc__ = row.__doc__
    return run

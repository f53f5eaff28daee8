"""What the worker says about its jobs: a line per attempt (DEBUG when done), a
summary of the outcomes every fleet_log_interval and at the stop, and the fleet line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from vesper.application.worker import Attempt, WorkerCore
from vesper.domain.fleet import Fleet
from vesper.domain.job import JobId, JobRecord
from vesper.entrypoints.tracing import JobSpan
from vesper.entrypoints.worker.lanes import Lane

log = logging.getLogger("vesper.worker")


class Report:
    """The log lines of one worker process about its jobs; the counts come from the core."""

    def __init__(self, worker_id: str, core: WorkerCore) -> None:
        self.worker_id = worker_id
        self.core = core

    def ids(self, job_id: JobId) -> dict[str, str]:
        """Structured fields of a job's log line (JSON keys, or key=value in text)."""
        return {"job_id": str(job_id), "worker_id": self.worker_id}

    def job(
        self, record: JobRecord, outcome: str, started: float, attempt: Attempt, span: JobSpan
    ) -> None:
        level = logging.DEBUG if outcome == "done" else logging.INFO
        if not log.isEnabledFor(level):
            return  # a done job's line is DEBUG: not built at all at the usual levels
        wait_ms = (
            (record.started_at - record.run_at).total_seconds() * 1000 if record.started_at else 0.0
        )
        fields: dict[str, object] = {
            "job_id": str(record.id),
            "job_type": record.type,
            "worker_id": self.worker_id,
            "priority": record.priority,
            "attempt": record.attempts,
            "wait_ms": round(max(wait_ms, 0.0), 1),
            "run_ms": round((time.monotonic() - started) * 1000, 1),
            "outcome": outcome,
        }
        if attempt.abandon_reason:
            fields["reason"] = attempt.abandon_reason
        if span.trace_id:
            fields["trace_id"] = span.trace_id
        # the fields are the record's extras; the formatter prints them (key=value or JSON)
        log.log(level, "job %s", outcome, extra=fields)

    def summary(self) -> None:
        """One INFO line with the outcomes since the last one; none while idle."""
        tally = self.core.tally()
        if tally.total:
            log.info(
                "jobs: done=%d failed=%d dlq=%d abandoned=%d snoozed=%d cancelled=%d"
                " in the last %.0fs",
                *(tally.done, tally.failed, tally.dlq, tally.abandoned),
                *(tally.snoozed, tally.cancelled),
                self.core.clock() - tally.since,
            )

    async def fleet(self, lane: Lane, get_fleet: Callable[[], Fleet]) -> None:
        try:
            fleet = await lane.run(get_fleet)
        except Exception:
            return
        log.info(  # the jobs finished here: the summary line logged just before this one
            "fleet: processes=%d slots=%d busy_here=%d/%d",
            len(fleet.processes),
            fleet.total_workers,
            self.core.busy,
            self.core.concurrency,
        )

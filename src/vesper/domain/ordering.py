"""The order in which claims take due jobs."""

from __future__ import annotations

from datetime import datetime

from vesper.domain.job import JobRecord


def claim_order(job: JobRecord) -> tuple[int, datetime, int]:
    """Sort key: highest priority first, then oldest run_at (FIFO), then insertion order."""
    return (-job.priority, job.run_at, job.seq)

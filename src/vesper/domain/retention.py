"""How long finished jobs are kept, and which jobs a prune or a delete may remove.

Only finished jobs (done, dlq, cancelled) are ever removed: pending, failed and
processing jobs still have work ahead of them. A status absent from the ages is kept
for ever; an age of zero removes its jobs as soon as they finish.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from vesper.domain.job import JobRecord
from vesper.domain.states import FINISHED, Status

# A prune removes at most this many jobs per store call: short transactions, short locks.
PRUNE_BATCH = 500


def check_ages(older_than: Mapping[Status, timedelta]) -> None:
    """Raises ValueError for an age of an unfinished status, or a negative age."""
    for status, age in older_than.items():
        if status not in FINISHED:
            raise ValueError(f"only finished jobs are pruned, not {status.value} ones")
        if age < timedelta(0):
            raise ValueError(f"a retention age cannot be negative: {status.value}={age}")


def prunable(job: JobRecord, older_than: Mapping[Status, timedelta], now: datetime) -> bool:
    """Whether a prune at `now` with these ages removes `job`: it finished at least its
    status's age ago."""
    age = older_than.get(job.status)
    return (
        age is not None
        and job.status in FINISHED
        and job.finished_at is not None
        and job.finished_at <= now - age
    )


def deletable(job: JobRecord) -> bool:
    """Whether `DELETE /jobs/{id}` may remove `job`: only a finished one."""
    return job.status in FINISHED

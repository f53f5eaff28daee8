"""Counts over the whole queue."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from vesper.domain.states import Status


@attrs.frozen(kw_only=True)
class QueueStats:
    """Job counts by (status, priority), as one store saw them at `now`."""

    counts: Mapping[tuple[Status, int], int]
    oldest_due_run_at: datetime | None  # earliest run_at among due pending/failed jobs
    now: datetime

    @property
    def by_status(self) -> dict[Status, int]:
        result = dict.fromkeys(Status, 0)
        for (status, _), n in self.counts.items():
            result[status] += n
        return result

    @property
    def by_priority(self) -> dict[int, int]:
        result: dict[int, int] = {}
        for (_, priority), n in self.counts.items():
            result[priority] = result.get(priority, 0) + n
        return dict(sorted(result.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def oldest_due_age(self) -> timedelta:
        if self.oldest_due_run_at is None:
            return timedelta(0)
        return max(self.now - self.oldest_due_run_at, timedelta(0))

"""Finished work per minute: what the dashboard's chart shows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import attrs

MINUTE = timedelta(minutes=1)


def minute_of(at: datetime) -> datetime:
    """The start of the minute holding `at`, in UTC."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


@attrs.frozen(kw_only=True)
class MinuteCounts:
    minute: datetime  # its start, aware UTC
    done: int  # jobs that finished done in this minute
    failed: int  # failures that ended in this minute: a job's last failed attempt, or dlq


@attrs.frozen(kw_only=True)
class Activity:
    """One row per minute of the window ending at `now`, oldest first, empty minutes
    included (the current, partial minute is the last)."""

    now: datetime
    minutes: tuple[MinuteCounts, ...]

    @classmethod
    def of(
        cls, counts: Mapping[datetime, tuple[int, int]], *, now: datetime, window: timedelta
    ) -> Activity:
        """`counts`: (done, failed) by minute start, as a store grouped them."""
        last = minute_of(now)
        n = max(1, int(window / MINUTE))
        minutes = []
        for i in range(n - 1, -1, -1):
            minute = last - i * MINUTE
            done, failed = counts.get(minute, (0, 0))
            minutes.append(MinuteCounts(minute=minute, done=done, failed=failed))
        return cls(now=now, minutes=tuple(minutes))

    @property
    def done(self) -> int:
        return sum(m.done for m in self.minutes)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.minutes)

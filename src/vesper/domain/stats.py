"""Counts over the whole queue."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from vesper.domain.states import CLAIMABLE, Status


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


@attrs.frozen(kw_only=True)
class ActiveJobs:
    """One queue's active jobs, as the overview shows them: `waiting` (pending or failed,
    due now or later) and `running` (processing), each counted up to a summary's cap + 1
    (more than the cap when it is cap + 1)."""

    waiting: int = 0
    running: int = 0

    @classmethod
    def of(cls, counts: Mapping[Status, int], cap: int) -> ActiveJobs:
        """From a queue's exact counts by status, with `cap` applied."""
        waiting = sum(counts.get(s, 0) for s in CLAIMABLE)
        return cls(
            waiting=min(waiting, cap + 1), running=min(counts.get(Status.PROCESSING, 0), cap + 1)
        )


@attrs.frozen(kw_only=True)
class QueueSummary:
    """Jobs by status, each counted only up to `cap` + 1, and the oldest due job: what the
    dashboard's overview shows. Counting stops at the cap so that its cost is bounded by
    the cap, not by the table; a count above `cap` means "more than cap" (the exact
    figure is QueueStats', a full count)."""

    counts: Mapping[Status, int]  # each at most cap + 1; statuses with none may be absent
    cap: int
    oldest_due_run_at: datetime | None  # as QueueStats'
    now: datetime
    # Each queue that has active jobs or settings, by name, with its active jobs capped
    # like `counts` (queues holding only finished jobs are left out: the cost must not
    # grow with them). None: the store does not count them (a store written before they
    # were part of the summary); the overview then asks ListQueues, which counts all.
    active_by_queue: Mapping[str, ActiveJobs] | None = None

    def __attrs_post_init__(self) -> None:
        check_cap(self.cap)

    @classmethod
    def of(cls, stats: QueueStats, cap: int) -> QueueSummary:
        """The summary of exact counts: the same cap applied."""
        return cls(
            counts={s: min(n, cap + 1) for s, n in stats.by_status.items()},
            cap=cap,
            oldest_due_run_at=stats.oldest_due_run_at,
            now=stats.now,
        )

    @property
    def by_status(self) -> dict[Status, int]:
        """Every status's count, cap + 1 where there are more than `cap`."""
        return {s: self.counts.get(s, 0) for s in Status}

    def capped(self, status: Status) -> bool:
        """Whether `status` has more than `cap` jobs (its count is then not known)."""
        return self.counts.get(status, 0) > self.cap

    @property
    def total(self) -> int:
        """The jobs counted, `cap` for each capped status: a lower bound when any is."""
        return sum(min(n, self.cap) for n in self.counts.values())

    @property
    def total_capped(self) -> bool:
        return any(self.capped(s) for s in Status)

    @property
    def oldest_due_age(self) -> timedelta:
        if self.oldest_due_run_at is None:
            return timedelta(0)
        return max(self.now - self.oldest_due_run_at, timedelta(0))


def check_cap(cap: int) -> None:
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"the count cap must be a positive integer, not {cap!r}")

"""QueueStats: counts by status and priority, totals, the oldest due job's age."""

from __future__ import annotations

from datetime import timedelta

from vesper.domain.states import Status
from vesper.domain.stats import QueueStats

from .builders import T0


def test_counts_roll_up_by_status_and_priority() -> None:
    stats = QueueStats(
        counts={
            (Status.PENDING, 5): 3,
            (Status.PENDING, 0): 2,
            (Status.DONE, 5): 10,
            (Status.DLQ, 10): 1,
        },
        oldest_due_run_at=None,
        now=T0,
    )
    assert stats.by_status == {
        Status.PENDING: 5,
        Status.PROCESSING: 0,
        Status.DONE: 10,
        Status.FAILED: 0,
        Status.DLQ: 1,
        Status.CANCELLED: 0,
    }
    assert stats.by_priority == {0: 2, 5: 13, 10: 1}
    assert list(stats.by_priority) == [0, 5, 10]
    assert stats.total == 16


def test_empty_queue() -> None:
    stats = QueueStats(counts={}, oldest_due_run_at=None, now=T0)
    assert stats.total == 0
    assert set(stats.by_status.values()) == {0}
    assert set(stats.by_status) == set(Status)
    assert stats.by_priority == {}
    assert stats.oldest_due_age == timedelta(0)


def test_oldest_due_age_is_now_minus_run_at_never_negative() -> None:
    def age(run_at_offset: timedelta) -> timedelta:
        return QueueStats(counts={}, oldest_due_run_at=T0 + run_at_offset, now=T0).oldest_due_age

    assert age(-timedelta(minutes=5)) == timedelta(minutes=5)
    assert age(timedelta(0)) == timedelta(0)
    assert age(timedelta(seconds=3)) == timedelta(0)  # a store whose clock ran ahead

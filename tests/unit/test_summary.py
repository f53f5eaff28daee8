"""The overview's counts: capped by status, the same with or without the store's help,
and shown as "N+" where counting stopped."""

from __future__ import annotations

import attrs
import pytest

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.execution import ClaimJobs
from vesper.application.management import GetStats, GetSummary
from vesper.application.submit import SubmitJob
from vesper.domain.fleet import Fleet
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats, QueueSummary
from vesper.domain.submission import JobRequest
from vesper.entrypoints.http.ui import views
from vesper.testing.freedoms import FreeJobs

from .builders import T0, seconds


def fill(repo: InMemoryJobRepository, pending: int, processing: int) -> None:
    for i in range(pending + processing):
        SubmitJob(repo)(JobRequest(type="t", priority=i % 3))
    ClaimJobs(repo)("w1", processing)


def test_summary_counts_each_status_up_to_the_cap(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    fill(repo, pending=5, processing=2)
    clock.advance(seconds(30))
    summary = GetSummary(repo, cap=3)()
    assert summary.by_status[Status.PENDING] == 4  # cap + 1: "more than 3"
    assert summary.capped(Status.PENDING)
    assert (summary.by_status[Status.PROCESSING], summary.capped(Status.PROCESSING)) == (2, False)
    assert (summary.total, summary.total_capped) == (5, True)
    assert summary.oldest_due_age == seconds(30)
    assert GetStats(repo)().by_status[Status.PENDING] == 5  # stats stays exact


def test_a_store_without_summary_gets_the_same_summary_from_stats(
    repo: InMemoryJobRepository,
) -> None:
    fill(repo, pending=5, processing=2)
    plain = FreeJobs(repo)
    assert not plain.capabilities.summary
    for cap in (3, 10):
        helped = GetSummary(repo, cap=cap)()
        assert helped.active_by_queue is not None
        # without the store's help no active jobs by queue: the overview asks ListQueues
        assert GetSummary(plain, cap=cap)() == attrs.evolve(helped, active_by_queue=None)


def test_summary_of_exact_counts_applies_the_cap() -> None:
    stats = QueueStats(
        counts={(Status.DONE, 0): 7, (Status.DONE, 5): 9, (Status.DLQ, 1): 2},
        oldest_due_run_at=None,
        now=T0,
    )
    summary = QueueSummary.of(stats, 10)
    assert summary.by_status[Status.DONE] == 11
    assert [s for s in Status if summary.capped(s)] == [Status.DONE]
    assert summary.total == 12  # 10 (at least) + 2


@pytest.mark.parametrize("cap", [0, -1, True, 2.5])
def test_a_cap_below_one_or_not_an_integer_is_refused(cap: object) -> None:
    with pytest.raises(ValueError, match="cap"):
        QueueSummary(counts={}, cap=cap, oldest_due_run_at=None, now=T0)  # type: ignore[arg-type]


def test_overview_shows_a_capped_count_with_a_plus() -> None:
    summary = QueueSummary(
        counts={Status.PENDING: 4, Status.FAILED: 2}, cap=3, oldest_due_run_at=None, now=T0
    )
    view = views.overview(summary, Fleet.of([]), None)
    assert view.by_status["pending"] == "3+"
    assert view.by_status["failed"] == "2"
    assert view.by_status["done"] == "0"
    assert view.total == "5+"
    exact = views.overview(
        QueueSummary.of(QueueStats(counts={}, oldest_due_run_at=None, now=T0), 3),
        Fleet.of([]),
        None,
    )
    assert (exact.total, set(exact.by_status.values())) == ("0", {"0"})

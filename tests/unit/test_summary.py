"""The overview's counts: capped by status and by queue, the same with or without the
store's help, and shown as "N+" where counting stopped."""

from __future__ import annotations

from datetime import datetime

import attrs
import pytest

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository, InMemoryWorkerRegistry
from vesper.application.execution import ClaimJobs
from vesper.application.forwarding import ForwardingJobRepository
from vesper.application.management import GetStats, GetSummary
from vesper.application.ports import JobRepository
from vesper.application.queues import ListQueues
from vesper.application.submit import SubmitJob
from vesper.domain.fleet import Fleet
from vesper.domain.queues import QueueChange
from vesper.domain.states import Status
from vesper.domain.stats import ActiveJobs, QueueStats, QueueSummary
from vesper.domain.submission import JobRequest
from vesper.entrypoints.http.ui import seams, views
from vesper.testing.fixtures import claim, new_job, ref, submit
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


def test_overview_shows_each_queues_active_jobs_with_a_plus_past_the_cap() -> None:
    summary = QueueSummary(
        counts={},
        cap=3,
        oldest_due_run_at=None,
        now=T0,
        active_by_queue={
            "media": ActiveJobs(waiting=4, running=3),
            "email": ActiveJobs(waiting=0, running=4),
        },
    )
    view = views.overview(summary, Fleet.of([]), None, summary.active_by_queue)
    assert view.by_queue == (
        views.QueueLine(name="email", waiting="0", running="3+"),
        views.QueueLine(name="media", waiting="3+", running="3"),
    )


class OlderStore(ForwardingJobRepository):
    """A store with queues and a summary written before the summary counted the active
    jobs by queue (a third-party one, say): it leaves them None."""

    def summary(self, *, cap: int, now: datetime | None = None) -> QueueSummary:
        return attrs.evolve(super().summary(cap=cap, now=now), active_by_queue=None)


@attrs.frozen
class Container:
    """The provider the overview's queue seam calls, over a real store."""

    jobs: JobRepository
    registry: InMemoryWorkerRegistry

    def list_queues(self) -> ListQueues:
        return ListQueues(self.jobs, self.registry)


def test_active_jobs_by_queue_come_from_list_queues_where_the_summary_has_none(
    repo: InMemoryJobRepository, registry: InMemoryWorkerRegistry
) -> None:
    now = repo.now()
    submit(repo, *(new_job(queue=q) for q in ("email", "email", "media", "archive")), now=now)
    claim(repo, now=now, queues=["media"])
    (archived,) = claim(repo, now=now, queues=["archive"])
    repo.complete([ref(archived)], now=now)
    repo.configure_queue("idle", QueueChange(paused=True))
    older = OlderStore(repo)
    summary = GetSummary(older, cap=1)()
    assert summary.active_by_queue is None
    fallback = seams.queue_counts(Container(older, registry), summary)
    # the same as the store's own count: archive (finished jobs only) left out, idle kept
    assert (
        fallback
        == GetSummary(repo, cap=1)().active_by_queue
        == {
            "email": ActiveJobs(waiting=2, running=0),  # 2: more than the cap of 1
            "idle": ActiveJobs(waiting=0, running=0),
            "media": ActiveJobs(waiting=0, running=1),
        }
    )

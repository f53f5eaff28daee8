"""The overview's counts: jobs by status counted up to a cap, the oldest due job, and
each queue's active jobs (`capabilities.summary`; skipped without it; the active jobs by
queue are skipped where the store leaves them None)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import cast

import pytest

from vesper.application.ports import JobRepository, QueueingJobRepository, SummaryJobRepository
from vesper.domain.queues import QueueChange
from vesper.domain.states import Status
from vesper.domain.stats import ActiveJobs, QueueSummary
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    at,
    claim,
    failure,
    new_job,
    ref,
    submit,
)
from vesper.testing.management_contract import one_of_each_status


def summary_of(jobs: JobRepository, *, cap: int, now: datetime = T0) -> QueueSummary:
    if not jobs.capabilities.summary:
        pytest.skip("the store does not summarize (the overview counts through stats)")
    return cast(SummaryJobRepository, jobs).summary(cap=cap, now=now)


def active_of(
    jobs: QueueingJobRepository, *, cap: int, now: datetime = T0
) -> Mapping[str, ActiveJobs]:
    active = summary_of(jobs, cap=cap, now=now).active_by_queue
    if active is None:
        pytest.skip("the store does not count active jobs by queue (the overview asks ListQueues)")
    return active


class SummaryContract(StoreFixtures):
    def test_summary_below_the_cap_is_exact(self, jobs: JobRepository) -> None:
        one_of_each_status(jobs)
        submit(jobs, new_job(priority=0), new_job(priority=9), now=at(3))
        summary = summary_of(jobs, cap=10, now=at(3))
        expected = dict.fromkeys(Status, 1)
        expected[Status.PENDING] = 3
        assert summary.by_status == expected
        assert summary.by_status == jobs.stats(now=at(3)).by_status
        assert (summary.cap, summary.total, summary.total_capped) == (10, 8, False)
        assert not any(summary.capped(s) for s in Status)

    def test_summary_stops_counting_past_the_cap(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job(priority=i % 3) for i in range(7)), now=T0)
        claim(jobs, now=T0, limit=2)
        summary = summary_of(jobs, cap=3, now=T0)
        # 5 pending: counted as cap + 1 ("more than 3"); 2 processing: exact
        assert summary.by_status[Status.PENDING] == 4
        assert summary.capped(Status.PENDING)
        assert summary.by_status[Status.PROCESSING] == 2
        assert not summary.capped(Status.PROCESSING)
        assert (summary.total, summary.total_capped) == (5, True)  # at least 3 + 2
        exact = summary_of(jobs, cap=5, now=T0)  # exactly at the cap: not capped
        assert (exact.by_status[Status.PENDING], exact.capped(Status.PENDING)) == (5, False)

    def test_summary_oldest_due_is_the_earliest_over_all_priorities(
        self, jobs: JobRepository
    ) -> None:
        submit(jobs, new_job(run_at=at(-90), priority=10), now=T0)
        claim(jobs, now=T0)  # processing: not waiting
        waiting = submit(
            jobs,
            new_job(run_at=at(-10), priority=10),
            new_job(run_at=at(-30.5), priority=0),  # the lowest priority waits longest
            new_job(run_at=at(-20), priority=5),
            new_job(run_at=at(-60), priority=3),  # cancelled below: not waiting
            new_job(run_at=at(5), priority=7),  # not due yet
            now=T0,
        )
        jobs.cancel(waiting[3].id, now=T0)
        summary = summary_of(jobs, cap=100, now=T0)
        assert (summary.oldest_due_run_at, summary.now) == (at(-30.5), T0)
        assert summary.oldest_due_age == timedelta(seconds=30.5)
        assert summary.oldest_due_run_at == jobs.stats(now=T0).oldest_due_run_at
        assert summary_of(jobs, cap=100, now=at(-25)).oldest_due_run_at == at(-30.5)
        assert summary_of(jobs, cap=100, now=at(-40)).oldest_due_run_at is None

    def test_summary_refuses_a_cap_below_one(self, jobs: JobRepository) -> None:
        with pytest.raises(ValueError, match="cap"):
            summary_of(jobs, cap=0)

    def test_summary_counts_each_queues_waiting_and_running_jobs(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        # mail: two waiting, one of them not due yet
        submit(jobs, new_job(queue="mail"), new_job(queue="mail", run_at=at(60)), now=T0)
        # media: one done, one failed with a retry to come (waiting), one running
        submit(jobs, *(new_job(queue="media") for _ in range(3)), now=T0)
        done, failed, _ = claim(jobs, now=T0, limit=3, queues=["media"])
        jobs.complete([ref(done)], now=at(1))
        jobs.fail([failure(failed, timedelta(hours=1))], now=at(1))
        # archive: finished jobs only (done, cancelled), which the overview leaves out
        _, later = submit(
            jobs, new_job(queue="archive"), new_job(queue="archive", run_at=at(60)), now=T0
        )
        (archived,) = claim(jobs, now=at(1), queues=["archive"])
        jobs.complete([ref(archived)], now=at(2))
        jobs.cancel(later.id, now=at(2))
        # idle: settings, no jobs
        jobs.configure_queue("idle", QueueChange(paused=True))
        active = active_of(jobs, cap=10, now=at(2))
        assert dict(active) == {
            "idle": ActiveJobs(waiting=0, running=0),
            "mail": ActiveJobs(waiting=2, running=0),
            "media": ActiveJobs(waiting=1, running=1),
        }
        # what the queues' own view says, for the queues with active jobs or settings
        states = {s.name: ActiveJobs.of(s.counts, 10) for s in jobs.queue_states(now=at(2))}
        assert {name: states[name] for name in active} == dict(active)

    def test_summary_stops_counting_each_queue_past_the_cap(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        submit(jobs, *(new_job(queue="mail") for _ in range(9)), now=T0)
        submit(jobs, *(new_job(queue="media") for _ in range(3)), now=T0)
        claim(jobs, now=T0, limit=4, queues=["mail"])
        # mail: 5 waiting and 4 running, each counted as cap + 1 ("more than 3");
        # media: exactly at the cap, not past it
        assert dict(active_of(jobs, cap=3)) == {
            "mail": ActiveJobs(waiting=4, running=4),
            "media": ActiveJobs(waiting=3, running=0),
        }
        assert dict(active_of(jobs, cap=5)) == {
            "mail": ActiveJobs(waiting=5, running=4),
            "media": ActiveJobs(waiting=3, running=0),
        }

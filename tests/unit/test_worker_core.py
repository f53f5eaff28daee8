"""The worker core without I/O: slots, claims, local lease deadlines, renewals, the
shutdown grace and the fencing of late outcomes, on the memory store and a fake clock
(no threads, sockets or sleeps)."""

from __future__ import annotations

import pytest

from vesper.application.execution import (
    ClaimJobs,
    Outcome,
    RecordOutcomes,
    ReleaseJobs,
    RenewLeases,
)
from vesper.application.worker import ClaimRequest, Phase
from vesper.domain.states import Status

from .builders import T0
from .worker_world import LEASE, POLICIES, RETRY_AT_ONCE, WORKER, World

# -- slots ------------------------------------------------------------------------------


def test_a_claim_asks_for_one_job_per_free_slot_of_the_served_types() -> None:
    world = World(concurrency=3, types=("a", "b"))
    request = world.core.claim_request()
    assert request == ClaimRequest(limit=3, types=("a", "b"), deadline=1000.0 + 27.0)


def test_claimed_attempts_take_slots_that_free_when_their_consumer_stops() -> None:
    world = World(concurrency=3)
    world.submit(5)
    first, second, third = world.claim()
    assert (world.core.busy, world.core.free) == (3, 0)
    assert world.core.claim_request() is None  # no free slot
    assert world.finish(first) == "done"
    assert world.core.busy == 2
    [fourth] = world.claim()
    assert world.core.busy == 3
    assert world.core.consumer_stopped(first) is False  # a slot frees once
    assert world.core.busy == 3
    assert {a.record.id for a in world.core.attempts} == {
        a.record.id for a in (second, third, fourth)
    }


def test_an_abandoned_sync_consumer_keeps_its_slot_until_its_thread_returns() -> None:
    world = World(concurrency=1)
    world.submit(2)
    [stubborn] = world.claim()
    world.clock.advance(28)  # past its local deadline: given up
    assert world.core.overdue() == [stubborn]
    # its (sync) consumer returns later than that: nothing recorded, the attempt ends...
    assert world.core.returned(stubborn, Outcome(job=stubborn.record)) is None
    world.core.ended(stubborn, "abandoned")
    assert world.core.idle
    # ...but its thread still runs: the slot stays taken, nothing more is claimed
    assert world.core.busy == 1
    assert world.claim() == []
    assert world.core.consumer_stopped(stubborn) is True
    assert len(world.claim()) == 1


def test_one_claim_in_flight_at_a_time() -> None:
    world = World(concurrency=4)
    request = world.core.claim_request()
    assert request is not None
    assert world.core.claim_request() is None  # its jobs will take the free slots
    world.core.claim_failed(request)
    again = world.core.claim_request()
    assert again is not None
    world.core.claimed(again, [])
    assert world.core.claim_request() is not None


def test_a_claim_returning_more_jobs_than_free_slots_is_refused() -> None:
    world = World(concurrency=2)
    world.submit(3)
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, 3)
    with pytest.raises(ValueError, match="3 jobs for 2 free slots"):
        world.core.claimed(request, records)


def test_nothing_is_claimed_once_stopping_but_a_claim_in_flight_still_runs() -> None:
    world = World(concurrency=2)
    world.submit(2)
    request = world.core.claim_request()
    assert request is not None
    world.core.stop()
    assert world.core.claim_request() is None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit)
    assert len(world.core.claimed(request, records)) == 2  # leased here: run or released
    assert world.core.claim_request() is None


def test_a_newer_attempt_at_the_same_job_keeps_its_entry_when_the_older_ends() -> None:
    world = World(concurrency=2)
    world.submit()
    [older] = world.claim()
    world.core.consumer_stopped(older)
    outcome = world.core.returned(older, Outcome(job=older.record, error="boom"))
    assert outcome is not None
    RecordOutcomes(world.repo, RETRY_AT_ONCE)([outcome])
    # the failure is due at once: the outcome's write claimed the same job again
    [newer] = world.claim()
    assert newer.record.id == older.record.id
    world.core.ended(older, "failed")
    assert world.core.attempts == [newer]  # still renewed, still released at shutdown
    assert world.core.renewal().attempts == (newer,)
    assert world.core.release_at_grace_end() == [newer]


# -- local lease deadlines --------------------------------------------------------------


def test_the_local_deadline_is_nine_tenths_of_the_lease_from_before_the_claim() -> None:
    world = World()
    world.submit(2)
    [first, second] = world.claim()
    assert first.deadline == second.deadline == 1000.0 + 27.0
    world.clock.advance(27)
    assert world.core.overdue() == []  # at the deadline: not yet
    world.clock.advance(0.001)
    assert world.core.overdue() == [first, second]
    assert first.abandon_reason == "lease expired locally"
    assert first.job.stopping  # a sync consumer sees it
    assert first.job.stop_reason == "lease expired locally"
    assert world.core.overdue() == []  # given up once


def test_a_claim_answered_after_its_deadline_is_given_up_before_it_runs() -> None:
    """Found by the soak: a worker's claim committed, then its connection was held (a
    black-hole) past the lease; others ran the jobs; the answer arrived and the worker
    started them again. Its jobs are now given up at once."""
    world = World()
    world.submit(2)
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit, request.types)
    world.clock.advance(27.001)  # the answer arrives past the local deadline
    attempts = world.core.claimed(request, records)
    assert [a.abandon_reason for a in attempts] == ["lease expired locally"] * 2
    assert all(a.job.stopping for a in attempts)
    assert world.core.overdue() == []  # given up once


def test_a_claim_answered_in_time_runs() -> None:
    world = World()
    world.submit()
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit, request.types)
    world.clock.advance(27)
    [attempt] = world.core.claimed(request, records)
    assert attempt.abandon_reason is None


def test_an_attempt_past_its_deadline_when_it_would_start_is_given_up() -> None:
    """Found by the soak (seed 21): a worker was paused (SIGSTOP, 6 s; lease 4 s) after
    its claim's answer and before its consumers began; others re-claimed and ran the
    jobs; resumed, it ran both consumers on its stale lease. `start` now refuses them."""
    world = World()
    world.submit(2)
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit, request.types)
    attempts = world.core.claimed(request, records)  # answered in time
    assert [a.abandon_reason for a in attempts] == [None, None]
    world.clock.advance(27.001)  # paused between the answer and the start
    assert [world.core.start(a) for a in attempts] == [False, False]
    assert [a.abandon_reason for a in attempts] == ["lease expired locally"] * 2
    assert all(a.job.stopping for a in attempts)
    assert world.core.overdue() == []  # given up once
    assert world.core.renewal().attempts == ()  # its lease is not renewed either


def test_an_attempt_at_its_deadline_when_it_starts_runs() -> None:
    world = World()
    world.submit()
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit, request.types)
    [attempt] = world.core.claimed(request, records)
    world.clock.advance(27)
    assert world.core.start(attempt)
    assert attempt.abandon_reason is None


def test_the_local_deadline_ends_before_the_stores_lease() -> None:
    world = World()
    world.submit()
    [attempt] = world.claim()
    world.clock.advance(27.001)
    assert world.core.overdue() == [attempt]
    stored = world.repo.get(attempt.record.id)
    assert stored.status is Status.PROCESSING  # the store still holds it for this process
    assert stored.lease_expires_at == T0 + LEASE


def test_a_renewal_moves_the_deadline_from_when_it_began() -> None:
    world = World()
    world.submit()
    [attempt] = world.claim()
    world.clock.advance(20)
    renewal = world.core.renewal()
    world.clock.advance(5)  # the renewal took 5 s to come back
    lost = RenewLeases(world.repo, POLICIES)(renewal.leases)
    renewed = world.core.renewed(renewal, lost)
    assert (renewed.renewed, renewed.lost, renewed.finished) == (1, [], [])
    assert attempt.deadline == 1000.0 + 20 + 27
    world.clock.advance(22)
    assert world.core.overdue() == []
    world.clock.advance(0.001)
    assert world.core.overdue() == [attempt]


# -- renewal selection ------------------------------------------------------------------


def test_a_renewal_takes_every_held_lease_but_the_abandoned_ones() -> None:
    world = World(concurrency=4)
    world.submit(4)
    running, returned, abandoned, ended = world.claim()
    assert world.core.returned(returned, Outcome(job=returned.record)) is not None
    world.core.abandon(abandoned, "lease lost")
    world.finish(ended)
    # an outcome being recorded keeps its lease renewed: the write may wait for the store
    assert world.core.renewal().attempts == (running, returned)


def test_a_lost_lease_stops_a_running_attempt_but_not_one_whose_outcome_ended_it() -> None:
    world = World(concurrency=3)
    world.submit(3)
    running, finished, kept = world.claim()
    renewal = world.core.renewal()
    # meanwhile: one lease ended elsewhere, another attempt's outcome was recorded
    world.repo.release([running.lease])
    assert world.finish(finished) == "done"
    lost = RenewLeases(world.repo, POLICIES)(renewal.leases)
    assert {ref.job_id for ref in lost} == {running.record.id, finished.record.id}
    renewed = world.core.renewed(renewal, lost)
    assert (renewed.renewed, renewed.lost, renewed.finished) == (1, [running], [finished])
    assert running.abandon_reason == "lease lost"
    assert running.job.stop_reason == "lease lost"
    assert finished.abandon_reason is None
    assert kept.abandon_reason is None


# -- the shutdown grace -----------------------------------------------------------------


def test_the_grace_end_releases_every_held_attempt_not_given_up() -> None:
    world = World(concurrency=4)
    world.submit(4)
    running, returned, abandoned, ended = world.claim()
    world.core.stop()
    assert world.core.returned(returned, Outcome(job=returned.record)) is not None
    world.core.abandon(abandoned, "lease lost")
    world.finish(ended)
    leftovers = world.core.release_at_grace_end()
    assert leftovers == [running, returned]
    assert {a.abandon_reason for a in leftovers} == {"shutdown"}
    assert running.job.stop_reason == "shutdown"
    released = ReleaseJobs(world.repo)([a.lease for a in leftovers])
    assert [j.status for j in released] == [Status.PENDING, Status.PENDING]
    assert world.core.release_at_grace_end() == []  # given up once


# -- fencing of late outcomes -----------------------------------------------------------


@pytest.mark.parametrize("reason", ["lease lost", "lease expired locally", "shutdown"])
def test_an_abandoned_attempt_records_nothing_when_its_consumer_returns_late(
    reason: str,
) -> None:
    world = World()
    world.submit()
    [attempt] = world.claim()
    world.core.abandon(attempt, reason)
    assert world.core.returned(attempt, Outcome(job=attempt.record)) is None
    assert world.core.returned(attempt, None) is None
    assert world.finish(attempt) == "abandoned"
    assert world.repo.get(attempt.record.id).status is Status.PROCESSING


def test_an_attempt_not_given_up_records_its_outcome() -> None:
    world = World()
    world.submit()
    [attempt] = world.claim()
    outcome = Outcome(job=attempt.record, error="boom", retryable=False)
    assert world.core.returned(attempt, outcome) is outcome
    assert attempt.phase is Phase.RETURNED
    world.core.ended(attempt, "dlq")
    assert attempt.phase is Phase.ENDED


# -- the summary ------------------------------------------------------------------------


def test_the_tally_counts_outcomes_since_the_last_one() -> None:
    world = World(concurrency=4)
    world.submit(4)
    attempts = world.claim()
    world.clock.advance(60)
    for attempt, outcome in zip(attempts, ["done", "failed", "dlq", "lease_lost"], strict=True):
        world.core.ended(attempt, outcome)
    tally = world.core.tally()
    assert (tally.done, tally.failed, tally.dlq, tally.abandoned) == (1, 1, 1, 1)
    assert world.clock() - tally.since == 60
    assert world.core.tally().total == 0


def test_a_given_up_attempt_never_calls_its_consumer() -> None:
    """The runner's side of the late claim above: run_attempt returns without a call."""
    import asyncio  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from vesper.application.consumers import Consumer  # noqa: PLC0415
    from vesper.entrypoints.worker.attempt import ConsumerCall, run_attempt  # noqa: PLC0415

    world = World()
    world.submit()
    request = world.core.claim_request()
    assert request is not None
    records = ClaimJobs(world.repo, POLICIES)(WORKER, request.limit, request.types)
    world.clock.advance(30)
    [attempt] = world.core.claimed(request, records)
    calls: list[object] = []
    with ThreadPoolExecutor(1) as pool:
        outcome = asyncio.run(
            run_attempt(ConsumerCall(attempt), Consumer(calls.append), None, pool)
        )
    assert outcome is None
    assert calls == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_pause_after_the_hand_off_stops_the_consumer_at_its_first_line(kind: str) -> None:
    """`start` said yes on the loop; then the process was paused (SIGSTOP) before the
    consumer's first line, past the local deadline: the first line is never reached."""
    import asyncio  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415
    from functools import partial  # noqa: PLC0415

    from vesper.application.consumers import Consumer  # noqa: PLC0415
    from vesper.entrypoints.worker.attempt import ConsumerCall, run_attempt  # noqa: PLC0415

    world = World()
    world.submit()
    [attempt] = world.claim()
    assert world.core.start(attempt)
    calls: list[object] = []

    async def async_consumer(job: object) -> None:
        calls.append(job)

    function = calls.append if kind == "sync" else async_consumer
    paused_until_late = world.core.may_begin(attempt)
    world.clock.advance(30)  # the pause: past the deadline before the first line
    assert paused_until_late
    assert not world.core.may_begin(attempt)
    with ThreadPoolExecutor(1) as pool:
        outcome = asyncio.run(
            run_attempt(
                ConsumerCall(attempt),
                Consumer(function),
                None,
                pool,
                may_begin=partial(world.core.may_begin, attempt),
            )
        )
    assert outcome is None
    assert calls == []

"""A Hypothesis state machine over the worker core and the memory store: claims (also
failing, also overlapping other events), consumers returning and stopping, outcomes
recorded, time passing, renewals, leases ended by another process, stop and the grace
end, in any order.

Checked throughout: busy slots never exceed the concurrency nor go negative, and are
exactly the attempts whose consumer's code has not stopped; a claim asks for the free
slots, one at a time, none once stopping; an abandoned attempt records nothing; an
attempt the core still runs within its local deadline holds a lease the store keeps
for longer (the deadline ends first).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vesper.application.execution import (
    ClaimJobs,
    Outcome,
    RecordOutcomes,
    ReleaseJobs,
    RenewLeases,
)
from vesper.application.worker import Attempt, ClaimRequest, Phase
from vesper.domain.job import JobId
from vesper.domain.states import Status

from .builders import T0
from .worker_world import POLICIES, WORKER, FakeMonotonic, World


class WorkerCoreMachine(RuleBasedStateMachine):
    world: World

    @initialize(concurrency=st.integers(1, 4), jobs=st.integers(0, 8))
    def start(self, concurrency: int, jobs: int) -> None:
        self.world = World(concurrency=concurrency)
        self.world.submit(jobs)
        self.attempts: list[Attempt] = []
        self.in_flight: ClaimRequest | None = None
        self.to_record: dict[Attempt, Outcome] = {}
        # leases ended by another process (a reaper) or released at the grace end
        self.ended_elsewhere: set[UUID] = set()

    @property
    def core(self):  # type: ignore[no-untyped-def]
        return self.world.core

    def pick(self, data: st.DataObject, attempts: list[Attempt]) -> Attempt:
        return data.draw(st.sampled_from(attempts))

    # -- claims -------------------------------------------------------------------------

    @rule(jobs=st.integers(1, 4))
    def submit(self, jobs: int) -> None:
        self.world.submit(jobs)

    @rule()
    def ask_to_claim(self) -> None:
        refused = self.core.stopping or self.in_flight is not None or self.core.free <= 0
        free = self.core.free
        request = self.core.claim_request()
        if refused:
            assert request is None
            return
        assert request is not None
        assert request.limit == free
        self.in_flight = request

    @precondition(lambda self: self.in_flight is not None)
    @rule(fails=st.booleans())
    def claim_returns(self, fails: bool) -> None:
        request, self.in_flight = self.in_flight, None
        assert request is not None
        if fails:
            self.core.claim_failed(request)
            return
        records = ClaimJobs(self.world.repo, POLICIES)(WORKER, request.limit, request.types)
        started = self.core.claimed(request, records)
        for attempt in started:
            self.core.start(attempt)
        self.attempts += started

    # -- consumers and outcomes ---------------------------------------------------------

    @precondition(lambda self: any(a.phase is Phase.RUNNING for a in self.attempts))
    @rule(data=st.data(), error=st.booleans(), code_stops=st.booleans())
    def consumer_returns(self, data: st.DataObject, error: bool, code_stops: bool) -> None:
        """The consumer returned (or its time limit passed: a sync one's thread may go
        on, `code_stops` False), or was cancelled after an abandon."""
        attempt = self.pick(data, [a for a in self.attempts if a.phase is Phase.RUNNING])
        abandoned = attempt.abandon_reason is not None
        outcome = Outcome(job=attempt.record, error="boom" if error else None)
        to_record = self.core.returned(attempt, None if abandoned and error else outcome)
        assert (to_record is None) == abandoned  # a late outcome records nothing
        if code_stops:
            assert self.core.consumer_stopped(attempt)
        if to_record is None:
            self.core.ended(attempt, "abandoned")
        else:
            self.to_record[attempt] = to_record

    @precondition(lambda self: any(a.holds_slot and a.consumer_returned for a in self.attempts))
    @rule(data=st.data())
    def consumer_thread_returns(self, data: st.DataObject) -> None:
        lingering = [a for a in self.attempts if a.holds_slot and a.consumer_returned]
        assert self.core.consumer_stopped(self.pick(data, lingering))

    @precondition(lambda self: any(not a.holds_slot for a in self.attempts))
    @rule(data=st.data())
    def a_slot_frees_once(self, data: st.DataObject) -> None:
        busy = self.core.busy
        assert not self.core.consumer_stopped(
            self.pick(data, [a for a in self.attempts if not a.holds_slot])
        )
        assert self.core.busy == busy

    @precondition(lambda self: bool(self.to_record))
    @rule(data=st.data())
    def outcome_written(self, data: st.DataObject) -> None:
        attempt = self.pick(data, list(self.to_record))
        outcome = self.to_record.pop(attempt)
        recorded = RecordOutcomes(self.world.repo, POLICIES)([outcome])
        self.core.ended(attempt, recorded[0].status.value if recorded else "lease_lost")

    # -- time and leases ----------------------------------------------------------------

    @rule(millis=st.integers(0, 40_000))
    def time_passes(self, millis: int) -> None:
        self.world.clock.advance(millis / 1000)
        held = [a for a in self.core.attempts if a.abandon_reason is None]
        late = self.core.overdue()
        assert late == [a for a in held if a.deadline < self.world.clock()]
        assert all(a.abandon_reason == "lease expired locally" for a in late)

    @rule(there=st.integers(0, 5000), back=st.integers(0, 5000))
    def heartbeat(self, there: int, back: int) -> None:
        """A renewal that reaches the store `there` ms after it began, and comes back
        `back` ms later."""
        expected = tuple(a for a in self.core.attempts if a.abandon_reason is None)
        renewal = self.core.renewal()
        assert renewal.attempts == expected
        self.world.clock.advance(there / 1000)
        lost = RenewLeases(self.world.repo, POLICIES)(renewal.leases)
        self.world.clock.advance(back / 1000)
        renewed = self.core.renewed(renewal, lost)
        assert all(a.abandon_reason == "lease lost" for a in renewed.lost)
        assert not any(a.consumer_returned for a in renewed.lost)
        assert all(a.consumer_returned for a in renewed.finished)

    @rule(dead=st.booleans())
    def another_process_expires_leases(self, dead: bool) -> None:
        """Expiry of overdue leases, or a reaper that found this process dead (paused)."""
        ended = self.world.repo.expire(worker_ids=[WORKER] if dead else ())
        self.lost_elsewhere({job.id for job in ended})

    # -- shutdown -----------------------------------------------------------------------

    @rule()
    def stop(self) -> None:
        self.core.stop()
        assert self.core.claim_request() is None

    @precondition(lambda self: self.core.stopping)
    @rule()
    def grace_ends(self) -> None:
        expected = [a for a in self.core.attempts if a.abandon_reason is None]
        leftovers = self.core.release_at_grace_end()
        assert leftovers == expected
        assert all(a.abandon_reason == "shutdown" for a in leftovers)
        released = ReleaseJobs(self.world.repo)([a.lease for a in leftovers])
        self.lost_elsewhere({job.id for job in released})

    def lost_elsewhere(self, job_ids: set[JobId]) -> None:
        self.ended_elsewhere.update(
            a.lease.token for a in self.core.attempts if a.record.id in job_ids
        )

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def busy_slots_stay_within_the_concurrency(self) -> None:
        assert 0 <= self.core.busy <= self.core.concurrency
        assert self.core.busy == sum(a.holds_slot for a in self.attempts)

    @invariant()
    def the_book_holds_the_attempts_not_ended(self) -> None:
        book = self.core.attempts
        assert all(a.phase is not Phase.ENDED for a in book)
        assert len({a.record.id for a in book}) == len(book)

    @invariant()
    def the_latest_attempt_at_each_job_is_held_until_it_ends(self) -> None:
        latest = {a.record.id: a for a in self.attempts}
        held = [a for a in latest.values() if a.phase is not Phase.ENDED]
        assert {id(a) for a in held} == {id(a) for a in self.core.attempts}

    @invariant()
    def a_local_deadline_ends_before_the_stores_lease(self) -> None:
        now = self.world.clock()
        for attempt in self.core.attempts:
            token = attempt.lease.token
            if attempt.abandon_reason or now > attempt.deadline or token in self.ended_elsewhere:
                continue
            stored = self.world.repo.get(attempt.record.id)
            assert stored.status is Status.PROCESSING
            assert stored.lease is not None
            assert stored.lease.token == token
            deadline = T0 + timedelta(seconds=attempt.deadline - FakeMonotonic.START)
            assert stored.lease.expires_at > deadline


WorkerCoreMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestWorkerCoreMachine = WorkerCoreMachine.TestCase

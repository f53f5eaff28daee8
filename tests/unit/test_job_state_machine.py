"""A Hypothesis state machine over the domain JobRecord, checked against a tiny model.

The model is a handful of plain variables (status, retries, attempts, current token,
lease expiry, run_at) updated by rules written independently of vesper.domain.job.
Every rule predicts from the model whether the action is legal; the domain must agree:
a legal action returns a job whose status is among TRANSITIONS[action]'s targets, an
illegal one raises (IllegalTransition, or LeaseLost for the fenced actions) and leaves
the job exactly as it was.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from vesper.domain.errors import IllegalTransition, LeaseLost
from vesper.domain.job import LEASE_EXPIRED_ERROR, Failure, JobRecord, LeaseRef
from vesper.domain.states import CLAIMABLE, FINISHED, TRANSITIONS, Status

from .builders import T0, make_job, new_id

WORKERS = st.sampled_from(["w1", "w2", "w3"])


class JobMachine(RuleBasedStateMachine):
    job: JobRecord

    @initialize(
        max_retries=st.integers(0, 3),
        starts_in=st.integers(0, 20),
        lease_seconds=st.integers(1, 60),
    )
    def start(self, max_retries: int, starts_in: int, lease_seconds: int) -> None:
        self.now: datetime = T0
        self.lease = timedelta(seconds=lease_seconds)
        self.job = make_job(
            max_retries=max_retries, run_at=T0 + timedelta(seconds=starts_in), payload={"n": 1}
        )
        # -- the model ------------------------------------------------------------------
        self.status = Status.PENDING
        self.retries = 0
        self.max_retries = max_retries
        self.run_at = self.job.run_at
        self.token: uuid.UUID | None = None  # the current lease's token
        self.worker: str | None = None
        self.expires_at: datetime | None = None
        self.claims = 0
        self.releases = 0
        self.issued: list[uuid.UUID] = []  # every token ever handed out, newest last
        self.done_seen = False
        self.dlq_exhausted = False  # the job reached dlq by running out of retries
        self.error = ""

    # -- helpers ---------------------------------------------------------------------

    def holds(self, token: uuid.UUID | None) -> bool:
        """The model's fencing rule: the current token, before its expiry."""
        return (
            self.status is Status.PROCESSING
            and token is not None
            and token == self.token
            and self.expires_at is not None
            and self.now < self.expires_at
        )

    def apply(
        self,
        action: str,
        change: Callable[[JobRecord], JobRecord],
        *,
        legal: bool,
        refusal: type[Exception] = IllegalTransition,
    ) -> JobRecord | None:
        """Run `change`; check it against `legal` and the transition table."""
        before = self.job
        snapshot = copy.deepcopy(before)
        if not legal:
            with pytest.raises(refusal):
                change(before)
            assert before == snapshot, f"a refused {action} changed the job"
            return None
        after = change(before)
        assert before == snapshot, f"{action} mutated the original job"
        sources, targets = TRANSITIONS[action]
        assert before.status in sources
        assert after.status in targets, f"{action}: {before.status} -> {after.status}"
        if before.status in {Status.DLQ, Status.CANCELLED} and after.status != before.status:
            assert action == "retry", f"{before.status} left by {action}"
        assert before.status is not Status.DONE, f"{action} moved a done job"
        assert after.updated_at == self.now
        assert after.id == before.id
        self.job = after
        return after

    def ref(self, token: uuid.UUID) -> LeaseRef:
        return LeaseRef(job_id=self.job.id, token=token)

    def stale_token(self, pick: int, fresh: bool) -> uuid.UUID:
        """A token that is not the current one: an earlier claim's, or one never issued."""
        earlier = [t for t in self.issued if t != self.token]
        if fresh or not earlier:
            return uuid.uuid4()
        return earlier[pick % len(earlier)]

    def fail_in_model(self, error: str, *, retryable: bool, retry_at: datetime) -> None:
        if retryable and self.retries < self.max_retries:
            self.status = Status.FAILED
            self.retries += 1
            self.run_at = retry_at
        else:
            self.status = Status.DLQ
            self.dlq_exhausted = retryable
        self.error = error
        self.token = self.worker = self.expires_at = None

    # -- rules -----------------------------------------------------------------------

    @rule(worker=WORKERS)
    def claim(self, worker: str) -> None:
        token = uuid.uuid4()
        due = self.status in {Status.PENDING, Status.FAILED} and self.run_at <= self.now
        job = self.apply(
            "claim",
            lambda j: j.claim(worker_id=worker, token=token, now=self.now, lease=self.lease),
            legal=due,
        )
        if job is None:
            return
        self.status = Status.PROCESSING
        self.claims += 1
        self.issued.append(token)
        self.token, self.worker, self.expires_at = token, worker, self.now + self.lease
        assert job.started_at == self.now

    @precondition(lambda self: self.issued)
    @rule()
    def complete_with_latest_lease(self) -> None:
        token = self.issued[-1]
        done = self.apply(
            "complete",
            lambda j: j.complete(self.ref(token), now=self.now),
            legal=self.holds(token),
            refusal=LeaseLost,
        )
        if done is not None:
            self.status = Status.DONE
            self.done_seen = True
            self.token = self.worker = self.expires_at = None
            assert done.finished_at == self.now

    @precondition(lambda self: self.issued)
    @rule(
        retryable=st.booleans(),
        delay=st.integers(0, 120),
        error=st.text(max_size=20),
    )
    def fail_with_latest_lease(self, retryable: bool, delay: int, error: str) -> None:
        token = self.issued[-1]
        retry_delay = timedelta(seconds=delay) if retryable else None
        failure = Failure(lease=self.ref(token), error=error, retry_delay=retry_delay)
        retries_before = self.retries
        job = self.apply(
            "fail",
            lambda j: j.fail(failure, now=self.now),
            legal=self.holds(token),
            refusal=LeaseLost,
        )
        if job is None:
            return
        self.fail_in_model(
            error, retryable=retryable, retry_at=self.now + (retry_delay or timedelta(0))
        )
        if job.status is Status.DLQ:
            assert not retryable or retries_before == self.max_retries

    @precondition(lambda self: self.issued)
    @rule(seconds=st.integers(1, 90))
    def renew_with_latest_lease(self, seconds: int) -> None:
        token = self.issued[-1]
        length = timedelta(seconds=seconds)
        job = self.apply(
            "renew",
            lambda j: j.renew(self.ref(token), now=self.now, lease=length),
            legal=self.holds(token),
            refusal=LeaseLost,
        )
        if job is not None:
            self.expires_at = self.now + length

    @precondition(lambda self: self.issued)
    @rule()
    def release_with_latest_lease(self) -> None:
        token = self.issued[-1]
        job = self.apply(
            "release",
            lambda j: j.release(self.ref(token), now=self.now),
            legal=self.holds(token),
            refusal=LeaseLost,
        )
        if job is not None:
            self.status = Status.PENDING
            self.releases += 1
            self.token = self.worker = self.expires_at = None

    @rule(
        action=st.sampled_from(["complete", "fail", "renew", "release"]),
        pick=st.integers(0, 50),
        fresh=st.booleans(),
    )
    def act_with_stale_lease(self, action: str, pick: int, fresh: bool) -> None:
        """A fenced-out worker (or a forged token) changes nothing."""
        ref = self.ref(self.stale_token(pick, fresh))
        changes: dict[str, Callable[[JobRecord], JobRecord]] = {
            "complete": lambda j: j.complete(ref, now=self.now),
            "fail": lambda j: j.fail(
                Failure(lease=ref, error="late", retry_delay=timedelta(0)), now=self.now
            ),
            "renew": lambda j: j.renew(ref, now=self.now, lease=self.lease),
            "release": lambda j: j.release(ref, now=self.now),
        }
        self.apply(action, changes[action], legal=False, refusal=LeaseLost)

    @precondition(lambda self: self.token is not None)
    @rule(action=st.sampled_from(["complete", "fail", "renew", "release"]))
    def act_with_current_token_for_another_job(self, action: str) -> None:
        """Claims in one batch may share a token: a ref names its job too."""
        assert self.token is not None
        ref = LeaseRef(job_id=new_id(), token=self.token)
        changes: dict[str, Callable[[JobRecord], JobRecord]] = {
            "complete": lambda j: j.complete(ref, now=self.now),
            "fail": lambda j: j.fail(
                Failure(lease=ref, error="x", retry_delay=timedelta(0)), now=self.now
            ),
            "renew": lambda j: j.renew(ref, now=self.now, lease=self.lease),
            "release": lambda j: j.release(ref, now=self.now),
        }
        self.apply(action, changes[action], legal=False, refusal=LeaseLost)

    @rule(dead_worker=st.booleans())
    def expire(self, dead_worker: bool) -> None:
        """Reaping: a lease past its expiry, or any lease of a process found dead."""
        processing = self.status is Status.PROCESSING
        live = self.expires_at is not None and self.now < self.expires_at
        if processing and live and not dead_worker:
            return  # a live lease of a live worker: no store would end it
        retries_before = self.retries
        job = self.apply("expire", lambda j: j.expire(now=self.now), legal=processing)
        if job is None:
            return
        # the job keeps its run_at (its place in the queue): it was due when claimed
        self.fail_in_model(LEASE_EXPIRED_ERROR, retryable=True, retry_at=self.run_at)
        assert self.run_at <= self.now
        if job.status is Status.DLQ:
            assert retries_before == self.max_retries

    # a processing job gets a cancel request instead (tests/unit/test_retry_policy.py)
    @precondition(lambda self: self.status is not Status.PROCESSING)
    @rule()
    def cancel(self) -> None:
        job = self.apply(
            "cancel",
            lambda j: j.cancel(now=self.now),
            legal=self.status in {Status.PENDING, Status.FAILED},
        )
        if job is not None:
            self.status = Status.CANCELLED

    @rule()
    def retry(self) -> None:
        job = self.apply(
            "retry",
            lambda j: j.retry(now=self.now),
            legal=self.status in {Status.DLQ, Status.FAILED, Status.CANCELLED},
        )
        if job is not None:
            self.status = Status.PENDING
            self.retries = 0
            self.run_at = self.now
            self.dlq_exhausted = False

    @rule(seconds=st.integers(0, 90))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        job = self.job
        assert job.status is self.status
        assert job.retries == self.retries
        assert job.max_retries == self.max_retries
        assert job.error == self.error
        if self.status in CLAIMABLE:
            assert job.run_at == self.run_at
        if self.token is None:
            assert job.lease is None
        else:
            assert job.lease is not None
            assert (job.lease.token, job.worker_id, job.lease_expires_at) == (
                self.token,
                self.worker,
                self.expires_at,
            )

    @invariant()
    def lease_iff_processing(self) -> None:
        assert (self.job.lease is not None) == (self.job.status is Status.PROCESSING)
        assert (self.job.worker_id is not None) == (self.job.status is Status.PROCESSING)

    @invariant()
    def retries_stay_in_bounds(self) -> None:
        assert 0 <= self.job.retries <= self.job.max_retries
        if self.job.status is Status.FAILED:
            assert 1 <= self.job.retries <= self.job.max_retries

    @invariant()
    def dlq_only_when_exhausted_or_not_retryable(self) -> None:
        if self.job.status is Status.DLQ and self.dlq_exhausted:
            assert self.job.retries == self.job.max_retries

    @invariant()
    def done_is_absorbing(self) -> None:
        if self.done_seen:
            assert self.job.status is Status.DONE

    @invariant()
    def attempts_count_claims_less_releases(self) -> None:
        assert self.job.attempts == self.claims - self.releases

    @invariant()
    def finished_at_iff_finished(self) -> None:
        assert (self.job.finished_at is not None) == (self.job.status in FINISHED)

    @invariant()
    def claimable_iff_due_in_model(self) -> None:
        due = self.status in CLAIMABLE and self.run_at <= self.now
        assert self.job.is_due(self.now) == due


TestJobStateMachine = JobMachine.TestCase

"""Submitting and executing jobs: the use cases on the in-memory store and a fixed clock."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.execution import (
    ClaimJobs,
    Outcome,
    RecordAndClaim,
    RecordOutcomes,
    ReleaseJobs,
    RenewLeases,
    lease_of,
)
from vesper.application.policies import Policies
from vesper.application.submit import SubmitJob, SubmitJobs
from vesper.domain.backoff import Backoff
from vesper.domain.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable
from vesper.domain.job import JobRecord, LeaseRef
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest, Limits

from .builders import T0, seconds

LEASE = timedelta(seconds=30)
NO_JITTER = Policies(
    lease=LEASE, backoff=Backoff(base=timedelta(seconds=1), cap=timedelta(hours=1), jitter=False)
)


class CountingSignal:
    def __init__(self) -> None:
        self.calls = 0

    def notify(self) -> None:
        self.calls += 1


def submit(repo: InMemoryJobRepository, **fields: object) -> JobRecord:
    request = JobRequest(**{"type": "email", **fields})  # type: ignore[arg-type]
    return SubmitJob(repo)(request).job


def claim_one(repo: InMemoryJobRepository, worker: str = "w1") -> JobRecord:
    [job] = ClaimJobs(repo, NO_JITTER)(worker, 1)
    return job


def record_one(
    repo: InMemoryJobRepository,
    outcome: Outcome,
    settings: Policies = NO_JITTER,
    rng: random.Random | None = None,
) -> JobRecord | None:
    """RecordOutcomes of one attempt: the stored job, or None when its lease was lost."""
    record = RecordOutcomes(repo, settings, rng or random.Random())
    recorded = record([outcome])
    assert len(recorded) <= 1
    return recorded[0] if recorded else None


# -- SubmitJob ------------------------------------------------------------------------


def test_submit_job_stores_a_pending_job_due_after_its_delay(
    repo: InMemoryJobRepository,
) -> None:
    signal = CountingSignal()
    submitted = SubmitJob(repo, signal=signal)(
        JobRequest(type="email", payload={"to": "a"}, priority=7, delay=seconds(10))
    )
    assert submitted.created
    job = submitted.job
    assert repo.get(job.id) == job
    assert (job.status, job.priority, job.payload) == (Status.PENDING, 7, {"to": "a"})
    assert job.run_at == T0 + seconds(10)
    assert job.max_retries == 3
    assert signal.calls == 1


def test_submit_job_uses_the_configured_default_max_retries(repo: InMemoryJobRepository) -> None:
    submitted = SubmitJob(repo, Policies(default_max_retries=9))(JobRequest(type="t"))
    assert submitted.job.max_retries == 9


def test_submit_job_rejects_invalid_request_and_stores_nothing(
    repo: InMemoryJobRepository,
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        SubmitJob(repo)(JobRequest(type="t", priority=11))
    assert raised.value.field == "priority"
    assert repo.stats().total == 0


def test_submit_job_replay_returns_the_original_and_does_not_signal(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    signal = CountingSignal()
    use_case = SubmitJob(repo, signal=signal)
    request = JobRequest(type="t", payload={"a": 1}, idempotency_key="k-1")
    first = use_case(request)
    clock.advance(seconds(60))
    again = use_case(request)
    assert again.job == first.job
    assert (first.created, again.created) == (True, False)
    assert signal.calls == 1
    with pytest.raises(IdempotencyConflict):
        use_case(JobRequest(type="t", payload={"a": 2}, idempotency_key="k-1"))
    assert repo.stats().total == 1


# -- SubmitJobs -------------------------------------------------------------------------


def test_submit_jobs_inserts_in_order(repo: InMemoryJobRepository) -> None:
    submitted = SubmitJobs(repo)([JobRequest(type=f"t{i}") for i in range(5)])
    jobs = [s.job for s in submitted]
    assert [j.type for j in jobs] == [f"t{i}" for i in range(5)]
    assert [j.seq for j in jobs] == sorted(j.seq for j in jobs)
    assert all(s.created for s in submitted)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (JobRequest(type=""), "jobs[2].type"),
        (JobRequest(type="t", priority=-1), "jobs[2].priority"),
        (JobRequest(type="t", payload=[]), "jobs[2].payload"),  # type: ignore[arg-type]
        (JobRequest(type="t", idempotency_key=""), "jobs[2].Idempotency-Key"),
        (JobRequest(type="t", delay=seconds(-1)), "jobs[2].delay_seconds"),
    ],
)
def test_submit_jobs_names_the_bad_job_and_inserts_none(
    repo: InMemoryJobRepository, bad: JobRequest, field: str
) -> None:
    signal = CountingSignal()
    with pytest.raises(InvalidRequest) as raised:
        SubmitJobs(repo, signal=signal)([JobRequest(type="a"), JobRequest(type="b"), bad])
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert repo.stats().total == 0
    assert signal.calls == 0


def test_submit_jobs_rejects_an_empty_batch(repo: InMemoryJobRepository) -> None:
    with pytest.raises(InvalidRequest) as raised:
        SubmitJobs(repo)([])
    assert raised.value.field == "jobs"


def test_submit_jobs_rejects_an_oversize_batch(repo: InMemoryJobRepository) -> None:
    use_case = SubmitJobs(repo, Policies(limits=Limits(max_batch=2)))
    assert len(use_case([JobRequest(type="t")] * 2)) == 2
    with pytest.raises(InvalidRequest) as raised:
        use_case([JobRequest(type="t")] * 3)
    assert raised.value.field == "jobs"
    assert repo.stats().total == 2


def test_unbounded_submit_jobs_takes_more_than_the_batch_limit(
    repo: InMemoryJobRepository,
) -> None:
    # app.enqueue_many's use: the HTTP API's batch limit does not bound the library
    use_case = SubmitJobs(repo, Policies(limits=Limits(max_batch=2)), bounded=False)
    assert len(use_case([JobRequest(type="t")] * 5)) == 5
    assert repo.stats().total == 5


def test_submit_jobs_conflict_inserts_nothing(repo: InMemoryJobRepository) -> None:
    submit(repo, idempotency_key="bound", payload={"v": 1})
    with pytest.raises(IdempotencyConflict):
        SubmitJobs(repo)(
            [
                JobRequest(type="email", payload={"v": 0}),
                JobRequest(type="email", payload={"v": 2}, idempotency_key="bound"),
            ]
        )
    assert repo.stats().total == 1


def test_submit_jobs_with_a_key_twice_creates_one_job(repo: InMemoryJobRepository) -> None:
    request = JobRequest(type="t", idempotency_key="twice")
    first, second = SubmitJobs(repo)([request, request])
    assert first.job == second.job
    assert (first.created, second.created) == (True, False)
    assert repo.stats().total == 1


def test_submit_jobs_gives_each_job_its_own_id(repo: InMemoryJobRepository) -> None:
    submitted = SubmitJobs(repo)([JobRequest(type="t")] * 10)
    assert len({s.job.id for s in submitted}) == 10


# -- ClaimJobs ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1])
def test_claim_jobs_with_no_free_slot_takes_nothing(
    repo: InMemoryJobRepository, limit: int
) -> None:
    submit(repo)
    assert ClaimJobs(repo)("w1", limit) == []
    assert repo.stats().by_status[Status.PENDING] == 1


class RefusingRepository(InMemoryJobRepository):
    """A store whose claim must not be called."""

    def claim(self, **kwargs: object) -> list[JobRecord]:  # type: ignore[override]
        raise AssertionError(f"claim called with {kwargs}")


@pytest.mark.parametrize("limit", [0, -3])
def test_claim_jobs_with_no_free_slot_does_not_ask_the_store(clock: FixedClock, limit: int) -> None:
    assert ClaimJobs(RefusingRepository(clock))("w1", limit) == []


def test_claim_jobs_leases_for_the_configured_time_in_claim_order(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    low = submit(repo, priority=1)
    high = submit(repo, priority=8)
    later = submit(repo, priority=8, delay=seconds(5))
    claimed = ClaimJobs(repo, Policies(lease=seconds(45)))("w1", 10)
    assert [j.id for j in claimed] == [high.id, low.id]
    for job in claimed:
        assert job.status is Status.PROCESSING
        assert job.worker_id == "w1"
        assert job.lease_expires_at == T0 + seconds(45)
        assert job.attempts == 1
    clock.advance(seconds(5))
    assert [j.id for j in ClaimJobs(repo)("w2", 10)] == [later.id]


def test_claim_jobs_filters_by_type(repo: InMemoryJobRepository) -> None:
    submit(repo, type="email", priority=9)
    sms = submit(repo, type="sms")
    assert [j.id for j in ClaimJobs(repo)("w1", 5, types=["sms"])] == [sms.id]
    assert ClaimJobs(repo)("w1", 5, types=[]) == []
    assert [j.type for j in ClaimJobs(repo)("w1", 5)] == ["email"]


# -- RecordOutcomes: a success -------------------------------------------------------


def test_recording_a_success_marks_done(repo: InMemoryJobRepository, clock: FixedClock) -> None:
    submit(repo)
    job = claim_one(repo)
    clock.advance(seconds(3))
    done = record_one(repo, Outcome(job=job))
    assert done is not None
    assert done.status is Status.DONE
    assert done.finished_at == T0 + seconds(3)
    assert done.lease is None
    assert repo.get(job.id) == done


def test_recording_a_success_twice_records_nothing_the_second_time(
    repo: InMemoryJobRepository,
) -> None:
    submit(repo)
    job = claim_one(repo)
    done = record_one(repo, Outcome(job=job))
    assert record_one(repo, Outcome(job=job)) is None  # fenced: the lease ended
    assert repo.get(job.id) == done


def test_recording_a_success_after_the_lease_expired_and_was_reclaimed_records_nothing(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo)
    first = claim_one(repo, "w1")
    clock.advance(LEASE)
    repo.expire()
    second = claim_one(repo, "w2")
    assert record_one(repo, Outcome(job=first)) is None
    assert repo.get(first.id) == second
    done = record_one(repo, Outcome(job=second))
    assert done is not None
    assert done.status is Status.DONE


def test_recording_a_success_at_the_instant_the_lease_expires_records_nothing(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo)
    job = claim_one(repo)
    clock.advance(LEASE)
    assert record_one(repo, Outcome(job=job)) is None
    assert repo.get(job.id) == job


# -- RecordOutcomes: a failure --------------------------------------------------------


def test_recording_a_failure_schedules_the_retry_after_the_backoff_of_the_claimed_retries(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo, max_retries=5)
    for retries_before, backoff in enumerate([1, 2, 4, 8]):
        job = claim_one(repo)
        assert job.retries == retries_before
        failed = record_one(repo, Outcome(job=job, error="boom"))
        assert failed is not None
        assert failed.status is Status.FAILED
        assert failed.retries == retries_before + 1
        assert failed.run_at == clock.now() + seconds(backoff)
        assert failed.error == "boom"
        assert ClaimJobs(repo)("w1", 1) == []  # not before the backoff
        clock.advance(seconds(backoff))


def test_recording_a_failure_draws_jitter_from_its_rng(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    settings = Policies(backoff=Backoff(base=seconds(10), jitter=True))
    submit(repo, max_retries=5)
    submit(repo, max_retries=5)
    first, second = ClaimJobs(repo)("w1", 2)
    expected = settings.backoff.delay(0, random.Random(42))
    failed = [
        record_one(repo, Outcome(job=job, error="x"), settings, random.Random(42))
        for job in (first, second)
    ]
    assert [f.run_at - clock.now() for f in failed if f is not None] == [expected, expected]
    assert timedelta(0) <= expected <= seconds(10)


def test_recording_a_failure_with_no_retries_left_goes_to_dlq(
    repo: InMemoryJobRepository,
) -> None:
    submit(repo, max_retries=0)
    job = claim_one(repo)
    dead = record_one(repo, Outcome(job=job, error="boom"))
    assert dead is not None
    assert dead.status is Status.DLQ
    assert (dead.retries, dead.error) == (0, "boom")
    assert dead.finished_at is not None


def test_recording_a_failure_not_retryable_goes_straight_to_dlq(
    repo: InMemoryJobRepository,
) -> None:
    submit(repo, max_retries=5)
    job = claim_one(repo)
    dead = record_one(repo, Outcome(job=job, error="bad input", retryable=False))
    assert dead is not None
    assert dead.status is Status.DLQ
    assert dead.retries == 0


def test_recording_a_failure_truncates_a_long_error(repo: InMemoryJobRepository) -> None:
    settings = Policies(limits=Limits(max_error_length=10))
    submit(repo)
    job = claim_one(repo)
    failed = record_one(repo, Outcome(job=job, error="0123456789" + "x" * 5000), settings)
    assert failed is not None
    assert failed.error == "0123456789"


def test_recording_a_failure_when_fenced_records_nothing(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo)
    job = claim_one(repo)
    record_one(repo, Outcome(job=job))
    done = repo.get(job.id)
    assert record_one(repo, Outcome(job=job, error="late")) is None
    assert repo.get(job.id) == done


def test_recording_a_failure_for_a_job_without_a_lease_is_a_programming_error(
    repo: InMemoryJobRepository,
) -> None:
    pending = submit(repo)
    with pytest.raises(ValueError, match="holds no lease"):
        record_one(repo, Outcome(job=pending, error="x"))


# -- RecordOutcomes -------------------------------------------------------------------


def test_record_outcomes_records_successes_and_failures_and_skips_lost_leases(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    for _ in range(3):
        submit(repo)
    ok, bad, lost = ClaimJobs(repo, NO_JITTER)("w1", 3)
    ReleaseJobs(repo)([lease_of(lost)])
    recorded = RecordOutcomes(repo, NO_JITTER)(
        [
            Outcome(job=ok),
            Outcome(job=bad, error="boom"),
            Outcome(job=lost, error="late", retryable=False),
        ]
    )
    assert {j.id for j in recorded} == {ok.id, bad.id}
    assert repo.get(ok.id).status is Status.DONE
    assert repo.get(bad.id).status is Status.FAILED
    assert repo.get(lost.id).status is Status.PENDING
    # each as the store left it: its status says how the attempt ended
    assert sorted(recorded, key=lambda j: j.id != ok.id) == [repo.get(ok.id), repo.get(bad.id)]


def test_record_outcomes_of_nothing_records_nothing(repo: InMemoryJobRepository) -> None:
    assert RecordOutcomes(repo)([]) == []


def test_record_and_claim_completes_successes_and_claims_the_free_slots(
    repo: InMemoryJobRepository,
) -> None:
    for _ in range(4):
        submit(repo)
    first, lost = ClaimJobs(repo, NO_JITTER)("w1", 2)
    ReleaseJobs(repo)([lease_of(lost)])
    both = RecordAndClaim(RecordOutcomes(repo, NO_JITTER), ClaimJobs(repo, NO_JITTER))
    recorded, claimed = both([Outcome(job=first), Outcome(job=lost)], "w1", 2)
    assert recorded == [repo.get(first.id)]
    assert repo.get(first.id).status is Status.DONE
    assert len(claimed) == 2
    assert first.id not in {j.id for j in claimed}
    assert all(j.status is Status.PROCESSING and j.worker_id == "w1" for j in claimed)


def test_record_and_claim_claims_only_the_given_types(repo: InMemoryJobRepository) -> None:
    first = submit(repo, type="a")
    others = [submit(repo, type=t) for t in ("b", "a", "b", "a")]
    [claimed_first] = ClaimJobs(repo, NO_JITTER)("w1", 1, ["a"])
    assert claimed_first.id == first.id
    both = RecordAndClaim(RecordOutcomes(repo, NO_JITTER), ClaimJobs(repo, NO_JITTER))
    recorded, claimed = both([Outcome(job=claimed_first)], "w1", 5, ("a",))
    assert [j.id for j in recorded] == [first.id]
    assert [j.id for j in claimed] == [j.id for j in others if j.type == "a"]
    assert all(repo.get(j.id).status is Status.PENDING for j in others if j.type == "b")


def test_record_and_claim_with_a_failure_records_and_claims_nothing(
    repo: InMemoryJobRepository,
) -> None:
    for _ in range(3):
        submit(repo)
    ok, bad = ClaimJobs(repo, NO_JITTER)("w1", 2)
    both = RecordAndClaim(RecordOutcomes(repo, NO_JITTER), ClaimJobs(repo, NO_JITTER))
    recorded, claimed = both([Outcome(job=ok), Outcome(job=bad, error="boom")], "w1", 2)
    assert {j.id for j in recorded} == {ok.id, bad.id}
    assert claimed == []
    assert repo.get(bad.id).status is Status.FAILED
    recorded, claimed = both([], "w1", 0)
    assert recorded == []
    assert claimed == []


class _ClaimFails(InMemoryJobRepository):
    """A store without complete_and_claim whose claims fail (the database went away)."""

    def claim(self, **_: object) -> list[JobRecord]:  # type: ignore[override]
        raise StoreUnavailable("down")


def test_record_and_claim_keeps_what_it_recorded_when_the_composed_claim_fails(
    clock: FixedClock,
) -> None:
    repo = _ClaimFails(clock)
    submit(repo)
    [job] = InMemoryJobRepository.claim(repo, worker_id="w1", limit=1, lease=seconds(30))
    both = RecordAndClaim(RecordOutcomes(repo, NO_JITTER), ClaimJobs(repo, NO_JITTER))
    # raising would make the caller retry, find the lease gone and call the job lost
    recorded, claimed = both([Outcome(job=job)], "w1", 2)
    assert ([j.id for j in recorded], claimed) == ([job.id], [])
    assert repo.get(job.id).status is Status.DONE


# -- RenewLeases ----------------------------------------------------------------------


def test_renew_leases_extends_the_current_ones_and_returns_the_lost(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    for _ in range(3):
        submit(repo)
    kept, done, gone = ClaimJobs(repo, NO_JITTER)("w1", 3)
    record_one(repo, Outcome(job=done))
    ReleaseJobs(repo)([lease_of(gone)])
    clock.advance(seconds(20))
    lost = RenewLeases(repo, Policies(lease=seconds(60)))(
        [lease_of(kept), lease_of(done), lease_of(gone)]
    )
    assert lost == [lease_of(done), lease_of(gone)]
    assert repo.get(kept.id).lease_expires_at == T0 + seconds(80)


def test_renew_leases_after_expiry_returns_the_lease(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo)
    job = claim_one(repo)
    clock.advance(LEASE + seconds(1))
    assert RenewLeases(repo)([lease_of(job)]) == [lease_of(job)]
    assert repo.get(job.id).lease_expires_at == T0 + LEASE


def test_renew_leases_of_nothing_is_nothing(repo: InMemoryJobRepository) -> None:
    assert RenewLeases(repo)([]) == []


# -- ReleaseJobs ----------------------------------------------------------------------


def test_release_jobs_returns_them_to_pending_and_refunds_the_attempt(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submitted = submit(repo)
    job = claim_one(repo)
    assert job.attempts == 1
    [released] = ReleaseJobs(repo)([lease_of(job)])
    assert released.status is Status.PENDING
    assert released.attempts == 0
    assert released.lease is None
    assert released.run_at == submitted.run_at
    again = claim_one(repo, "w2")
    assert (again.id, again.attempts) == (job.id, 1)
    assert record_one(repo, Outcome(job=job)) is None  # fenced: released


def test_release_jobs_skips_stale_leases(repo: InMemoryJobRepository) -> None:
    submit(repo)
    job = claim_one(repo)
    stale = LeaseRef(job_id=job.id, token=uuid.UUID(int=0))
    assert ReleaseJobs(repo)([stale]) == []
    assert ReleaseJobs(repo)([]) == []
    assert repo.get(job.id) == job

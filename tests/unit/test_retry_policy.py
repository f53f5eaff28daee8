"""vesper.Snooze, vesper.RetryAfter and a consumer's RetryPolicy, in the domain."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from vesper.domain.backoff import Backoff
from vesper.domain.errors import NonRetryable
from vesper.domain.job import JobId, JobRecord, Lease, LeaseRef, Snoozed
from vesper.domain.retry import RetryAfter, RetryPolicy, Snooze
from vesper.domain.states import Status

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def running() -> JobRecord:
    token = uuid.uuid4()
    return JobRecord(
        id=JobId(uuid.uuid4()),
        type="t",
        status=Status.PROCESSING,
        attempts=2,
        retries=1,
        run_at=NOW,
        lease=Lease(worker_id="w", token=token, expires_at=NOW + timedelta(seconds=30)),
        created_at=NOW,
        updated_at=NOW,
        started_at=NOW,
    )


def lease(job: JobRecord) -> LeaseRef:
    assert job.lease is not None
    return LeaseRef(job_id=job.id, token=job.lease.token)


def test_snooze_refunds_the_attempt_and_counts_a_snooze() -> None:
    job = running()
    later = job.snooze(Snoozed(lease=lease(job), delay=timedelta(seconds=90)), now=NOW)
    assert (later.status, later.run_at, later.attempts, later.retries, later.snoozes) == (
        Status.PENDING,
        NOW + timedelta(seconds=90),
        1,
        1,
        1,
    )
    assert later.lease is None


def test_snooze_and_retry_after_take_seconds_or_a_timedelta() -> None:
    assert Snooze(1.5).delay == timedelta(seconds=1.5)
    assert RetryAfter(timedelta(minutes=2)).delay == timedelta(minutes=2)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds"):
            Snooze(bad)
    with pytest.raises(TypeError, match="seconds"):
        RetryAfter("10")  # type: ignore[arg-type]


def test_the_default_policy_retries_everything_but_non_retryable() -> None:
    policy = RetryPolicy()
    assert policy.retryable(ValueError("x"))
    assert policy.retryable(RetryAfter(3))
    assert not policy.retryable(NonRetryable("no"))
    assert policy.delay(ValueError("x"), retries=2) is None  # the service's backoff
    assert policy.delay(RetryAfter(3), retries=2) == timedelta(seconds=3)


def test_retry_on_retries_only_those_exceptions() -> None:
    policy = RetryPolicy(retry_on=(TimeoutError, ConnectionError))
    assert policy.retryable(TimeoutError())
    assert policy.retryable(ConnectionResetError())  # a subclass
    assert not policy.retryable(ValueError())
    assert policy.retryable(RetryAfter(1))  # asked for explicitly


def test_discard_on_goes_to_dlq_even_when_retry_on_matches() -> None:
    policy = RetryPolicy(retry_on=OSError, discard_on=(PermissionError,))
    assert policy.retryable(OSError())
    assert not policy.retryable(PermissionError())
    assert not RetryPolicy(discard_on=RetryAfter).retryable(RetryAfter(1))


def test_a_policy_backoff_sets_the_delay() -> None:
    policy = RetryPolicy(backoff=Backoff(base=2, cap=10, jitter=False))
    assert policy.backoff is not None
    assert policy.backoff.base == timedelta(seconds=2)
    delays = [policy.delay(ValueError(), retries=n, rng=random.Random(1)) for n in range(4)]
    assert delays == [timedelta(seconds=s) for s in (2, 4, 8, 10)]
    assert policy.delay(RetryAfter(1), retries=3) == timedelta(seconds=1)  # RetryAfter wins


def test_a_policy_refuses_what_is_not_an_exception_class_or_a_count() -> None:
    with pytest.raises(TypeError, match="exception classes"):
        RetryPolicy(retry_on=(ValueError, "KeyError"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    assert RetryPolicy(max_retries=7).max_retries == 7


def test_a_cancel_request_turns_every_end_but_success_into_cancelled() -> None:
    job = running().cancel(now=NOW)
    assert (job.status, job.cancel_requested_at) == (Status.PROCESSING, NOW)
    at = NOW + timedelta(seconds=1)
    assert job.renew(lease(job), now=at, lease=timedelta(seconds=30)).status is Status.CANCELLED
    assert job.release(lease(job), now=at).status is Status.CANCELLED
    assert job.expire(now=at).status is Status.CANCELLED
    snoozed = job.snooze(Snoozed(lease=lease(job), delay=timedelta(seconds=5)), now=at)
    assert snoozed.status is Status.CANCELLED
    done = job.complete(lease(job), now=at)
    assert (done.status, done.cancel_requested_at) == (Status.DONE, NOW)

"""What a worker does with jobs: claim, record outcomes, renew, release."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import attrs

from vesper.application.policies import Policies
from vesper.application.ports import (
    CompletingJobRepository,
    JobRepository,
    QueueingCompletingJobRepository,
    QueueingJobRepository,
)
from vesper.domain.errors import StoreLacksQueues
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.results import ResultRejected, encode_result
from vesper.domain.states import Status


def lease_of(job: JobRecord) -> LeaseRef:
    """The reference a worker presents for a job it claimed."""
    if job.lease is None:
        raise ValueError(f"job {job.id} holds no lease")
    return LeaseRef(job_id=job.id, token=job.lease.token)


QueueSlots = Sequence[tuple[str, int]]
"""Free slots by queue: how many jobs a claim may take from each."""


@attrs.frozen
class ClaimJobs:
    """Lease up to `limit` due jobs for `worker_id`, in claim order.

    Args:
        worker_id: the claiming process.
        limit: how many at most (its free slots).
        types: only these job types; None takes every type.
        queues: the free slots of each queue served: one store call per queue, each
            for that many; None takes from every queue, `limit` in all (the only form
            a store without `capabilities.queues` accepts).
    """

    jobs: JobRepository
    settings: Policies = Policies()

    def __call__(
        self,
        worker_id: str,
        limit: int,
        types: Sequence[str] | None = None,
        queues: QueueSlots | None = None,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        if queues is None:
            return self.jobs.claim(
                worker_id=worker_id, limit=limit, lease=self.settings.lease, types=types
            )
        claimed: list[JobRecord] = []
        for queue, slots in queues:
            if slots > 0:
                claimed += self.queueing.claim(
                    worker_id=worker_id,
                    limit=slots,
                    lease=self.settings.lease,
                    types=types,
                    queues=[queue],
                )
        return claimed

    @property
    def queueing(self) -> QueueingJobRepository:
        """The store, as one that takes `queues=`.

        Raises:
            StoreLacksQueues: it declares no `capabilities.queues`.
        """
        if not self.jobs.capabilities.queues:
            raise StoreLacksQueues()
        return cast(QueueingJobRepository, self.jobs)


def failure_of(
    job: JobRecord,
    error: str,
    *,
    retryable: bool,
    settings: Policies,
    rng: random.Random,
    retry_delay: timedelta | None = None,
) -> Failure:
    """The Failure to record for `job`: `retry_delay` if given (its consumer's policy
    set one), else the settings' backoff, which follows the retries it was claimed with."""
    if not retryable:
        delay = None
    elif retry_delay is not None:
        delay = retry_delay
    else:
        delay = settings.backoff.delay(job.retries, rng)
    return Failure(
        lease=lease_of(job), error=error[: settings.limits.max_error_length], retry_delay=delay
    )


@attrs.frozen(kw_only=True)
class Outcome:
    """How one attempt ended: `error` None and no `snooze` is a success.

    A failure may carry the `retry_delay` its consumer's policy set (vesper.RetryAfter,
    or the consumer's backoff); a `snooze` sends the job back to pending for that long
    (vesper.Snooze).
    """

    job: JobRecord
    error: str | None = None
    retryable: bool = True
    retry_delay: timedelta | None = None
    snooze: timedelta | None = None
    result: Any = None  # a success's return value, stored as the job's result unless None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.snooze is None


def with_results(
    outcomes: Sequence[Outcome], max_bytes: int
) -> tuple[Sequence[Outcome], dict[JobId, str]]:
    """The outcomes to record, and the JSON text of each success's result by job id.

    A result that cannot be stored (not JSON, or over `max_bytes`) turns its success
    into a failure without retry: the same code would return the same value again.
    """
    if all(o.result is None for o in outcomes):  # the common case: nothing to encode
        return outcomes, {}
    settled: list[Outcome] = []
    results: dict[JobId, str] = {}
    for outcome in outcomes:
        if outcome.error is None and outcome.result is not None:
            try:
                results[outcome.job.id] = encode_result(outcome.result, max_bytes)
            except ResultRejected as exc:
                error = f"ResultRejected: {exc}"
                settled.append(Outcome(job=outcome.job, error=error, retryable=False))
                continue
        settled.append(outcome)
    return settled, results


@attrs.frozen
class RecordOutcomes:
    """Record finished attempts in as few store calls as possible: a success is done;
    a failure is failed with a backoff while retries remain, else dlq (also when not
    retryable). The error is truncated to the limit.

    Returns:
        The stored jobs whose outcome was recorded, as the store left them (their
        status says which of done, failed or dlq); the others had lost their lease.
    """

    jobs: JobRepository
    settings: Policies = Policies()
    rng: random.Random = attrs.field(factory=random.Random)

    def __call__(self, outcomes: Sequence[Outcome]) -> list[JobRecord]:
        outcomes, results = with_results(outcomes, self.settings.limits.max_result_bytes)
        successes = [lease_of(o.job) for o in outcomes if o.succeeded]
        failures = [
            failure_of(
                o.job,
                o.error,
                retryable=o.retryable,
                settings=self.settings,
                rng=self.rng,
                retry_delay=o.retry_delay,
            )
            for o in outcomes
            if o.error is not None
        ]
        snoozes = [
            Snoozed(lease=lease_of(o.job), delay=o.snooze)
            for o in outcomes
            if o.error is None and o.snooze is not None
        ]
        recorded: list[JobRecord] = []
        if successes and results:
            recorded += self.jobs.complete(successes, results=results)
        elif successes:  # no results: the call a store written before them knows
            recorded += self.jobs.complete(successes)
        if failures:
            recorded += self.jobs.fail(failures)
        if snoozes:
            recorded += self.jobs.snooze(snoozes)
        return recorded


@attrs.frozen
class RecordAndClaim:
    """Record finished attempts and claim up to `limit` more for `worker_id`.

    When every outcome is a success (the common case) the completions and the claim go
    together: in one store call where the store declares `complete_and_claim` (one
    statement on PostgreSQL, one transaction on SQLite), else as complete() and then
    claim(). Either way an error means nothing was recorded, so a caller that retries
    records nothing twice: a claim that fails after the completions were recorded
    claims nothing instead (the caller claims on its own). Failures are recorded as
    RecordOutcomes does, and nothing is claimed then.

    Args:
        types: only these job types are claimed, as for ClaimJobs; None takes every type.

    Returns:
        The stored jobs whose outcome was recorded, as RecordOutcomes returns them (the
        others had lost their lease), and the jobs claimed, in claim order.
    """

    record: RecordOutcomes
    claim: ClaimJobs

    def __call__(
        self,
        outcomes: Sequence[Outcome],
        worker_id: str,
        limit: int,
        types: Sequence[str] | None = None,
        queues: QueueSlots | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        outcomes, results = with_results(outcomes, self.record.settings.limits.max_result_bytes)
        if limit <= 0 or not all(o.succeeded for o in outcomes):
            return self.record(outcomes), []
        jobs = self.record.jobs
        if not jobs.capabilities.complete_and_claim:
            recorded = self.record(outcomes)
            return recorded, self._claim_rest(worker_id, limit, types, queues)
        completing = cast(CompletingJobRepository, jobs)
        leases = [lease_of(o.job) for o in outcomes]
        lease = self.claim.settings.lease
        if queues is None and results:
            return completing.complete_and_claim(
                leases, worker_id=worker_id, limit=limit, lease=lease, types=types, results=results
            )
        if queues is None:  # no results: the call a store written before them knows
            return completing.complete_and_claim(
                leases, worker_id=worker_id, limit=limit, lease=lease, types=types
            )
        # one queue rides on the completions; the others are claimed after them
        (queue, slots), rest = queues[0], queues[1:]
        completed, claimed = cast(QueueingCompletingJobRepository, jobs).complete_and_claim(
            leases,
            worker_id=worker_id,
            limit=slots,
            lease=lease,
            types=types,
            queues=[queue],
            results=results or None,
        )
        if rest:
            claimed += self._claim_rest(worker_id, limit - slots, types, rest)
        return completed, claimed

    def _claim_rest(
        self,
        worker_id: str,
        limit: int,
        types: Sequence[str] | None,
        queues: QueueSlots | None,
    ) -> list[JobRecord]:
        """A claim after outcomes were recorded: an error claims nothing instead."""
        try:
            return self.claim(worker_id, limit, types, queues)
        except Exception:
            # whatever the store raised: were it to reach the caller, its retry would
            # find these leases gone and report the recorded outcomes as lost
            return []


@attrs.frozen(kw_only=True)
class LeaseCheck:
    """What a renewal found: the leases no longer held, and of those the jobs that
    ended cancelled because a cancel was requested (their consumers must stop)."""

    lost: list[LeaseRef]
    cancelled: frozenset[JobId] = frozenset()


@attrs.frozen
class RenewLeases:
    """Extend the leases of running jobs; returns the refs whose lease was lost."""

    jobs: JobRepository
    settings: Policies = Policies()

    def __call__(self, leases: Sequence[LeaseRef]) -> list[LeaseRef]:
        return self.check(leases).lost

    def check(self, leases: Sequence[LeaseRef]) -> LeaseCheck:
        """Renew `leases`: the lost ones, among them those cancelled by request."""
        if not leases:
            return LeaseCheck(lost=[])
        changed = self.jobs.renew(leases, lease=self.settings.lease)
        renewed = {job.id for job in changed if job.status is Status.PROCESSING}
        cancelled = frozenset(job.id for job in changed if job.status is Status.CANCELLED)
        return LeaseCheck(
            lost=[ref for ref in leases if ref.job_id not in renewed], cancelled=cancelled
        )


@attrs.frozen
class ReleaseJobs:
    """Hand running jobs back to pending without counting the attempt (shutdown)."""

    jobs: JobRepository

    def __call__(self, leases: Sequence[LeaseRef]) -> list[JobRecord]:
        if not leases:
            return []
        return self.jobs.release(leases)

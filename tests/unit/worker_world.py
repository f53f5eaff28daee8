"""A worker core and the memory store it claims from, on one fake clock: what the
worker's driver does, written out synchronously for the unit tests."""

from __future__ import annotations

from datetime import timedelta

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.execution import ClaimJobs, Outcome, RecordOutcomes, RenewLeases
from vesper.application.policies import Policies
from vesper.application.worker import Attempt, WorkerCore
from vesper.domain.backoff import Backoff
from vesper.domain.submission import JobRequest

from .builders import T0, new_job

LEASE = timedelta(seconds=30)
POLICIES = Policies(lease=LEASE)
RETRY_AT_ONCE = Policies(lease=LEASE, backoff=Backoff(base=timedelta(0), jitter=False))
WORKER = "w1"


class FakeMonotonic:
    """A monotonic clock in seconds that moves only when told (with the store's)."""

    START = 1000.0

    def __init__(self, store_clock: FixedClock) -> None:
        self.now = self.START
        self._store_clock = store_clock

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._store_clock.advance(timedelta(seconds=seconds))


class World:
    """A worker core and the memory store it claims from, on one fake clock."""

    def __init__(self, concurrency: int = 3, types: tuple[str, ...] | None = None) -> None:
        store_clock = FixedClock(T0)
        self.repo = InMemoryJobRepository(store_clock)
        self.clock = FakeMonotonic(store_clock)
        self.core = WorkerCore(concurrency=concurrency, lease=LEASE, types=types, clock=self.clock)

    def submit(self, count: int = 1, job_type: str = "email") -> None:
        self.repo.submit([new_job(JobRequest(type=job_type)) for _ in range(count)])

    def claim(self) -> list[Attempt]:
        """What the driver does: ask the core, call the store, tell the core."""
        request = self.core.claim_request()
        if request is None:
            return []
        records = ClaimJobs(self.repo, POLICIES)(WORKER, request.limit, request.types)
        attempts = self.core.claimed(request, records)
        for attempt in attempts:
            self.core.start(attempt)
        return attempts

    def finish(self, attempt: Attempt, error: str | None = None) -> str:
        """The consumer returns (its code stops with it), the outcome is recorded."""
        self.core.consumer_stopped(attempt)
        outcome = self.core.returned(attempt, Outcome(job=attempt.record, error=error))
        label = "abandoned"
        if outcome is not None:
            recorded = RecordOutcomes(self.repo, POLICIES)([outcome])
            label = recorded[0].status.value if recorded else "lease_lost"
        self.core.ended(attempt, label)
        return label

    def renew(self) -> list[Attempt]:
        renewal = self.core.renewal()
        lost = RenewLeases(self.repo, POLICIES)(renewal.leases)
        return list(self.core.renewed(renewal, lost).lost)

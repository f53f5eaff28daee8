"""One attempt at a job, as the worker core tracks it, and the values the core hands
to its driver (what to claim, which leases to renew, what a renewal found)."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from vesper.application.consumers import Job
from vesper.application.execution import lease_of
from vesper.domain.job import JobRecord, LeaseRef


class Phase(enum.Enum):
    """Where an attempt is: claimed -> running -> returned -> ended.

    An attempt may be abandoned in any phase but ended (its lease was lost, its local
    deadline passed, or the shutdown grace ended): that is `Attempt.abandon_reason`,
    not a phase, because its consumer may go on running (a thread cannot be stopped)
    and a returned attempt's outcome may already be on its way to the store.
    """

    CLAIMED = "claimed"  # leased to this process; its consumer not started yet
    RUNNING = "running"  # the consumer runs
    RETURNED = "returned"  # the consumer returned: its outcome is being recorded
    ENDED = "ended"  # recorded, found lost, or given up: no longer this process's


@attrs.define(eq=False)  # identity: the same job may be claimed again, a new attempt
class Attempt:
    """One claim of one job by this process."""

    job: Job  # what the consumer receives; its `stop` tells a sync consumer to stop
    deadline: float  # clock reading by which the lease must have been renewed
    phase: Phase = Phase.CLAIMED
    abandon_reason: str | None = None  # set: nothing is recorded for this attempt
    # until the consumer's code has stopped: a sync consumer abandoned past its time
    # limit or lease keeps its slot until its thread returns
    holds_slot: bool = True
    pool: str | None = None  # the queue whose slot it takes; None: the one pool

    @property
    def record(self) -> JobRecord:
        """The stored job as it was claimed."""
        return self.job.record

    @property
    def lease(self) -> LeaseRef:
        return lease_of(self.job.record)

    @property
    def consumer_returned(self) -> bool:
        """The consumer is done: what is left is recording its outcome (or nothing)."""
        return self.phase in (Phase.RETURNED, Phase.ENDED)


@attrs.frozen
class ClaimRequest:
    """A claim to make: up to `limit` jobs of `types` (None: every type), from every
    queue, or with `queues` so many from each of them (their sum is `limit`)."""

    limit: int
    types: tuple[str, ...] | None
    # the local lease deadline of what it takes: read before the call, so that it
    # ends before the lease the store starts once the call reaches it
    deadline: float
    queues: tuple[tuple[str, int], ...] | None = None


@attrs.frozen
class Renewal:
    """The leases to renew at a heartbeat, and when the renewal began."""

    attempts: tuple[Attempt, ...]
    started_at: float

    @property
    def leases(self) -> list[LeaseRef]:
        return [attempt.lease for attempt in self.attempts]


@attrs.frozen
class Renewed:
    """What a renewal found."""

    renewed: int  # leases extended
    # leases lost while their consumer ran: abandoned now, their consumers must stop
    lost: Sequence[Attempt]
    # leases lost after their consumer returned: their own outcome ended them, no loss
    finished: Sequence[Attempt]
    # jobs cancelled on request while their consumer ran: abandoned now, to stop
    cancelled: Sequence[Attempt] = ()


@attrs.define
class Tally:
    """Attempts ended since `since`, by outcome: the periodic summary line."""

    since: float
    done: int = 0
    failed: int = 0
    dlq: int = 0
    abandoned: int = 0  # lease lost or given up: nothing recorded
    snoozed: int = 0  # back to pending later (vesper.Snooze)
    cancelled: int = 0  # stopped on a cancel request

    @property
    def total(self) -> int:
        return self.done + self.failed + self.dlq + self.abandoned + self.snoozed + self.cancelled

    def count(self, outcome: str) -> None:
        if outcome == "done":
            self.done += 1
        elif outcome == "failed":
            self.failed += 1
        elif outcome == "dlq":
            self.dlq += 1
        elif outcome == "snoozed":
            self.snoozed += 1
        elif outcome == "cancelled":
            self.cancelled += 1
        else:
            self.abandoned += 1

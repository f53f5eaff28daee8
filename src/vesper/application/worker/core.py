"""The worker's rules, without I/O: slots, attempts, local lease deadlines, which
leases to renew, what to claim, and what to release when the shutdown grace ends.

The asyncio driver (`vesper.entrypoints.worker`) moves data between this core and the
outside world: it asks what to claim and reports what the store returned, runs the
consumers and reports when each one returns and when its code has stopped, renews the
leases the core selects. Time is an injected monotonic clock (seconds): tests drive it
by hand, without threads, sockets or sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import timedelta

from vesper.application.consumers import Job
from vesper.application.execution import Outcome
from vesper.application.worker.attempts import (
    Attempt,
    ClaimRequest,
    Phase,
    Renewal,
    Renewed,
    Tally,
)
from vesper.domain.job import JobId, JobRecord, LeaseRef

Clock = Callable[[], float]

# The local deadline is this fraction of the lease: the store's lease starts after the
# clock reading it is computed from, so a deadline a little short of it ends first.
LEASE_MARGIN = 0.9
# the abandon reason of an attempt whose job was cancelled on request (`Job.stop_reason`)
CANCELLED = "cancelled"


class WorkerCore:
    """The state of one worker process's slots and its attempts.

    Args:
        concurrency: how many consumers may run at once (one pool for every queue).
        lease: the lease the store grants at a claim or renewal.
        types: the job types to claim (None: every type).
        clock: a monotonic clock, in seconds.
        queues: the slots of each queue served, instead of one pool: a queue's jobs
            take its slots only (`concurrency` is then their sum).
    """

    def __init__(
        self,
        *,
        concurrency: int,
        lease: timedelta,
        types: tuple[str, ...] | None,
        clock: Clock,
        queues: Mapping[str, int] | None = None,
    ) -> None:
        # the pools of slots: one per queue served, or one (None) for every queue
        self.pools: dict[str | None, int] = {None: concurrency}
        if queues:
            self.pools = {name: queues[name] for name in queues}
        self._busy_in: dict[str | None, int] = dict.fromkeys(self.pools, 0)
        self.concurrency = sum(self.pools.values())
        self.types = types
        self.clock = clock
        self._margin = lease.total_seconds() * LEASE_MARGIN
        # every attempt whose lease this process holds, by job: claimed, running, or
        # recording its outcome. The outcome's write may claim the same job again (a
        # failure due at once): the newer attempt then owns the entry.
        self._book: dict[JobId, Attempt] = {}
        # attempts whose consumer's code has not stopped: these occupy the slots. An
        # attempt frees its slot when its consumer returns, before its outcome is
        # recorded, so the next claim overlaps the outcome's commit.
        self._busy = 0
        self._claiming = False  # one claim in flight at a time: slots never overbook
        self.stopping = False
        self._tally = Tally(since=clock())

    # -- slots ----------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Slots in use: attempts whose consumer's code has not stopped."""
        return self._busy

    @property
    def free(self) -> int:
        return self.concurrency - self._busy

    @property
    def attempts(self) -> list[Attempt]:
        """The attempts whose lease this process holds."""
        return list(self._book.values())

    @property
    def idle(self) -> bool:
        """No attempt holds a lease here."""
        return not self._book

    # -- claims ---------------------------------------------------------------------

    def claim_request(self) -> ClaimRequest | None:
        """What to claim now: one job per free slot, of the served types (with a pool
        per queue: from each queue, one job per free slot of its pool).

        Returns:
            None when no slot is free, a claim is in flight (its jobs will take the free
            slots), or the worker is stopping; otherwise the claim, marked in flight
            until `claimed` or `claim_failed`.
        """
        if self.stopping or self._claiming or self.free <= 0:
            return None
        self._claiming = True
        queues = None
        if None not in self.pools:
            queues = tuple(
                (str(pool), size - self._busy_in[pool])
                for pool, size in self.pools.items()
                if size > self._busy_in[pool]
            )
        return ClaimRequest(
            limit=self.free,
            types=self.types,
            deadline=self.clock() + self._margin,
            queues=queues,
        )

    def claimed(self, request: ClaimRequest, records: Sequence[JobRecord]) -> list[Attempt]:
        """The claim returned `records`: each takes a slot, with the claim's deadline.

        Also after stop(): the jobs are leased to this process, and the shutdown lets
        them run within the grace, or releases them.

        Raises:
            ValueError: more jobs than the claim's limit (the slots would overbook).
        """
        self._claiming = False
        if len(records) > request.limit:
            raise ValueError(f"claimed {len(records)} jobs for {request.limit} free slots")
        free: dict[str | None, int] = {None: request.limit}
        if request.queues is not None:
            free = dict(request.queues)
        for record in records:
            pool = record.queue if request.queues is not None else None
            free[pool] = free.get(pool, 0) - 1
            if free[pool] < 0:
                raise ValueError(f"claimed more jobs of queue {pool!r} than its free slots")
        started = []
        # A claim whose answer comes back after its local deadline (the connection was
        # held past the lease) may have been taken over already: its jobs are given up
        # before their consumers start, never run as a second live execution.
        late = self.clock() > request.deadline
        for record in records:
            pool = record.queue if request.queues is not None else None
            attempt = Attempt(job=Job(record), deadline=request.deadline, pool=pool)
            self._book[record.id] = attempt
            self._busy_in[pool] += 1
            started.append(attempt)
            if late:
                self.abandon(attempt, "lease expired locally")
        self._busy += len(started)
        return started

    def claim_failed(self, request: ClaimRequest) -> None:
        """The claim raised: nothing was claimed, the next may go."""
        self._claiming = False

    # -- an attempt's life ----------------------------------------------------------

    def start(self, attempt: Attempt) -> bool:
        """claimed -> running: its consumer is called. Returns whether it may be.

        Checked right before the call: a process paused (SIGSTOP, a VM freeze) after
        the claim's answer and before the consumer began may resume past the local
        deadline, when another worker may run the job already. Such an attempt is given
        up instead; its consumer is never called and nothing is recorded.
        """
        if attempt.abandon_reason is None and self.clock() > attempt.deadline:
            self.abandon(attempt, "lease expired locally")
        if attempt.phase is Phase.CLAIMED:
            attempt.phase = Phase.RUNNING
        return attempt.abandon_reason is None

    def may_begin(self, attempt: Attempt) -> bool:
        """Whether the consumer's first line may run now: the attempt is not given up
        and its local deadline has not passed. Asked on the consumer's thread, right
        before the call (`start` asked on the loop, before the hand-off): it only reads.
        """
        return attempt.abandon_reason is None and self.clock() <= attempt.deadline

    def returned(self, attempt: Attempt, outcome: Outcome | None) -> Outcome | None:
        """running -> returned: the consumer returned (or was given up).

        Args:
            outcome: how it ended; None when it was cancelled for an abandon.

        Returns:
            The outcome to record; None for an abandoned attempt (its lease was lost,
            its local deadline passed or the grace ended): a late outcome records
            nothing, the job is another attempt's now, or will be.
        """
        if attempt.phase is not Phase.ENDED:
            attempt.phase = Phase.RETURNED
        if attempt.abandon_reason is not None:
            return None
        return outcome

    def consumer_stopped(self, attempt: Attempt) -> bool:
        """The consumer's code has stopped (returned, or its thread did): the slot
        frees. Returns whether it freed one (a slot frees once)."""
        if not attempt.holds_slot:
            return False
        attempt.holds_slot = False
        self._busy -= 1
        self._busy_in[attempt.pool] -= 1
        return True

    def ended(self, attempt: Attempt, outcome: str) -> None:
        """-> ended: its outcome was recorded (`outcome` is the stored job's status),
        its lease found lost ("lease_lost"), or nothing recorded ("abandoned"). Its
        slot stays taken until `consumer_stopped`."""
        attempt.phase = Phase.ENDED
        job_id = attempt.record.id
        if self._book.get(job_id) is attempt:  # not a newer attempt at the same job
            del self._book[job_id]
        self._tally.count(outcome)

    def abandon(self, attempt: Attempt, reason: str) -> bool:
        """Give an attempt up: nothing will be recorded for it, and its consumer is
        told to stop (`Job.stopping`). Returns False if it was already given up."""
        if attempt.abandon_reason is not None:
            return False
        attempt.abandon_reason = reason
        attempt.job.stop(reason)
        return True

    # -- leases ---------------------------------------------------------------------

    def renewal(self) -> Renewal:
        """The leases to renew at a heartbeat: every attempt held here that was not
        given up, including those whose consumer returned and whose outcome is being
        recorded (the write may wait for the store: the lease must outlive it)."""
        held = tuple(a for a in self._book.values() if a.abandon_reason is None)
        return Renewal(attempts=held, started_at=self.clock())

    def renewed(
        self,
        renewal: Renewal,
        lost: Iterable[LeaseRef],
        cancelled: Collection[JobId] = frozenset(),
    ) -> Renewed:
        """The renewal came back with the leases in `lost` no longer current, of which
        the jobs in `cancelled` ended cancelled on request.

        A lost lease whose consumer had returned was ended by its own outcome's write
        meanwhile: not a loss. Any other is given up ("lease lost", or "cancelled").
        The rest have new deadlines, counted from when the renewal began.
        """
        by_job = {a.record.id: a for a in renewal.attempts}
        lost_ids: set[JobId] = set()
        gone: list[Attempt] = []
        stopped: list[Attempt] = []
        finished: list[Attempt] = []
        for ref in lost:
            if ref.job_id in lost_ids:
                continue
            lost_ids.add(ref.job_id)
            attempt = by_job[ref.job_id]
            if attempt.consumer_returned:
                finished.append(attempt)
            elif ref.job_id in cancelled:
                self.abandon(attempt, CANCELLED)
                stopped.append(attempt)
            else:
                self.abandon(attempt, "lease lost")
                gone.append(attempt)
        deadline = renewal.started_at + self._margin
        for attempt in renewal.attempts:
            if attempt.record.id not in lost_ids:
                attempt.deadline = deadline
        kept = len(renewal.attempts) - len(gone) - len(stopped) - len(finished)
        return Renewed(renewed=kept, lost=gone, finished=finished, cancelled=stopped)

    def overdue(self) -> list[Attempt]:
        """Give up the attempts whose lease was not renewed before their local deadline:
        another worker may own them by now. Returns them (their consumers must stop)."""
        now = self.clock()
        late = [a for a in self._book.values() if a.abandon_reason is None and now > a.deadline]
        for attempt in late:
            self.abandon(attempt, "lease expired locally")
        return late

    # -- shutdown -------------------------------------------------------------------

    def stop(self) -> None:
        """Claim nothing more (also on an outcome's write)."""
        self.stopping = True

    def release_at_grace_end(self) -> list[Attempt]:
        """The grace ended: give up every attempt still held and not yet given up;
        returns them, whose leases to release (back to pending)."""
        leftovers = [a for a in self._book.values() if a.abandon_reason is None]
        for attempt in leftovers:
            self.abandon(attempt, "shutdown")
        return leftovers

    # -- the summary ----------------------------------------------------------------

    def tally(self) -> Tally:
        """The attempts ended since the last call, by outcome (and restart counting)."""
        tally, self._tally = self._tally, Tally(since=self.clock())
        return tally

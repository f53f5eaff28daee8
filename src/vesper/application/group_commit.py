"""Group commit: concurrent submissions share one store call.

Under a burst every submission used to commit on its own: one round trip, one
statement, one commit each (W5: the API spent half its CPU on store calls). The
process's `GroupCommit` queues the submissions that arrive while a commit is running;
the leader commits everything queued (up to `max_batch` jobs) in one call, answers
each caller with its own result, and goes on while anyone waits. A caller is answered
only after the commit that holds its jobs, so an acknowledged job is as durable as
before; a caller that finds nobody else waiting commits alone, as before. The
container puts a `CoalescingJobRepository` around the store's repository, so that the
use cases' `jobs.submit` goes through it.

One caller cannot fail the others: a commit that raises anything but StoreUnavailable
(an IdempotencyConflict, a row the database refuses) is tried again one caller at a
time, so that each gets its own outcome. A commit is atomic, so nothing of the failed
attempt was kept, and a caller's batch stays all or nothing.

Two fronts share the queue, and the leader holds one slot of the store gate while it
commits:

- `submit`, for threads (app.enqueue, the use cases called in a thread): a caller that
  finds no leader leads in its own thread until its own jobs are committed, then hands
  the lead to the next in line.
- `submit_async`, for coroutines (the HTTP API): waiting holds no thread and no slot.
  The submission's steps (application/submit.py) are run by the leader, in the thread
  that commits them: validating a large job never stalls the event loop. A coroutine
  cancelled while it waits (a request past its write timeout) is dropped if its commit
  has not started, and may still be committed if it has.

A submission waits for the store no longer than the gate's `wait` from when it began
to wait: the lead waits for a slot until then, and the submissions whose wait has
passed get StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from vesper.application.commit_queue import (
    LoopLead,
    Waiting,
    answer,
    commit_together,
    on_a_loop,
)
from vesper.application.forwarding import ForwardingJobRepository
from vesper.application.ports import JobRepository, Submitted
from vesper.application.store_gate import StoreGate
from vesper.application.submit import SubmitSteps
from vesper.domain.errors import StoreUnavailable
from vesper.domain.submission import NewJob

T = TypeVar("T")
# a thread waiting for its answer looks this often whether its leader was stranded
STRANDED_CHECK_S = 1.0

Leader = Waiting | LoopLead


class CoalescingJobRepository(ForwardingJobRepository):
    """`jobs`, whose submissions go through `group`: the decorator the container puts
    around the store's repository (its other calls go straight through)."""

    def __init__(self, jobs: JobRepository, group: GroupCommit) -> None:
        super().__init__(jobs)
        self._group = group

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        return self._group.submit(self._jobs, jobs, now=now)


class GroupCommit:
    """Commits concurrent submissions together: one per process, for any repository
    (a batch holds the submissions into one)."""

    def __init__(self, gate: StoreGate, *, max_batch: int = 1000) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._gate = gate
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[Waiting] = deque()
        self._leader: Leader | None = None  # who leads; None: nobody

    # -- the fronts ---------------------------------------------------------------------

    def submit(
        self, target: JobRepository, jobs: Sequence[NewJob], *, now: datetime | None = None
    ) -> list[Submitted]:
        """`target.submit(jobs)`, possibly committed together with other submissions."""
        if not jobs or on_a_loop():
            # a sync call on an event loop's thread (an async consumer's enqueue) must
            # not wait for a lead that may need this very loop: it commits on its own
            return self._gate.call(
                lambda: target.submit(jobs, now=now), deadline=self._gate.deadline()
            )
        me = Waiting(target, list(jobs), now)
        me.event = threading.Event()
        with self._lock:
            self._queue.append(me)
            lead = self._leader is None
            if lead:
                self._leader = me
        while not lead and not me.event.wait(STRANDED_CHECK_S):
            with self._lock:  # a lead whose loop stopped before it started: take over
                lead = isinstance(self._leader, LoopLead) and self._leader.stranded()
                if lead:
                    self._leader = me
        if lead or me.lead:
            deadline = me.since + self._gate.wait
            try:
                self._gate.call(lambda: self._lead(me), deadline=deadline)
            except StoreUnavailable as exc:
                self._expire(exc, deadline)
                self._step_down(me)
        if me.error is not None:
            raise me.error
        result: list[Submitted] = me.result
        return result

    async def submit_async(self, target: JobRepository, steps: SubmitSteps[T]) -> T:
        """The result of `steps`, run by the leader around a commit into `target`
        shared with others."""
        loop = asyncio.get_running_loop()
        me = Waiting(target, None)
        me.steps, me.loop, me.future = steps, loop, loop.create_future()
        with self._lock:
            self._queue.append(me)
            if isinstance(self._leader, LoopLead) and self._leader.stranded():
                self._leader = None  # an app served again on a new loop (tests)
            lead = None
            if self._leader is None:
                lead = self._leader = LoopLead(loop)
        if lead is not None:
            self._start(lead)
        try:
            result: T = await me.future
        except asyncio.CancelledError:
            with self._lock:
                me.cancelled = True  # dropped, unless its commit has begun
            raise
        return result

    # -- leading ------------------------------------------------------------------------

    def _start(self, lead: LoopLead) -> None:
        """Start `lead` on its loop (called there)."""
        lead.task = asyncio.ensure_future(self._lead_from_loop(lead))

    async def _lead_from_loop(self, lead: LoopLead) -> None:
        """Wait for a slot (from the oldest submission's arrival), then lead in the
        gate's thread; submissions past their wait get StoreUnavailable meanwhile."""
        try:
            while True:
                with self._lock:
                    if self._leader is not lead:
                        return
                    if not self._queue:
                        self._leader = None
                        return
                    deadline = self._queue[0].since + self._gate.wait
                try:
                    await self._gate.run(lambda: self._lead_in_thread(lead), deadline=deadline)
                    return
                except StoreUnavailable as exc:
                    self._expire(exc, deadline)
        finally:
            with self._lock:
                gave_up = self._leader is lead and not lead.started
            if gave_up:  # cancelled before it began to lead: pass the lead on
                self._step_down(lead)

    def _lead_in_thread(self, lead: LoopLead) -> None:
        with self._lock:
            if self._leader is not lead:
                return  # it gave up, or was found stranded, meanwhile
            lead.started = True
        self._lead(None)

    def _lead(self, me: Waiting | None) -> None:
        """Commit batches until `me` is answered (or, leading for coroutines, until
        nobody waits), then pass the lead on or drop it."""
        try:
            while (batch := self._next_batch(me)) is not None:
                if batch:
                    self._commit(batch)
        except BaseException:
            self._step_down(None)
            raise

    def _next_batch(self, me: Waiting | None) -> list[Waiting] | None:
        """The next units to commit together (one target, one `now`, at most max_batch
        jobs but a larger unit alone), prepared; None when the lead ends or is passed on."""
        batch: list[Waiting] = []
        count = 0
        while True:
            with self._lock:
                if not batch and (not self._queue or (me is not None and me.done)):
                    handed = self._hand_over()
                    break
                if not self._queue:
                    return batch
                unit = self._queue[0]
                if batch and (
                    unit.target is not batch[0].target
                    or unit.now != batch[0].now
                    or self._too_many(unit.jobs, count)
                ):
                    return batch
                self._queue.popleft()
                if unit.cancelled:
                    continue
            if unit.jobs is None and not self._prepare(unit):
                continue
            if batch and self._too_many(unit.jobs, count):
                with self._lock:
                    self._queue.appendleft(unit)
                return batch
            assert unit.jobs is not None
            batch.append(unit)
            count += len(unit.jobs)
        self._pass_lead(handed)
        return None

    def _too_many(self, jobs: list[NewJob] | None, count: int) -> bool:
        return jobs is not None and count + len(jobs) > self._max_batch

    def _prepare(self, unit: Waiting) -> bool:
        """Run a coroutine's steps up to its jobs; a refusal answers it at once."""
        assert unit.steps is not None
        try:
            unit.jobs = next(unit.steps)
            return True
        except Exception as exc:
            unit.done, unit.error = True, exc
            answer([unit])
            return False

    def _commit(self, batch: list[Waiting]) -> None:
        units = [unit.jobs for unit in batch if unit.jobs is not None]
        try:
            outcomes = commit_together(batch[0].target, units, batch[0].now)
        except BaseException as exc:  # nobody may be left waiting
            outcomes = [exc] * len(batch)
        for unit, outcome in zip(batch, outcomes, strict=True):
            unit.settle(outcome)
        answer(batch)

    def _expire(self, exc: StoreUnavailable, deadline: float) -> None:
        """Answer `exc` to the submissions whose wait ended by `deadline` or now."""
        until = max(deadline, time.monotonic())
        with self._lock:
            late = [unit for unit in self._queue if unit.since + self._gate.wait <= until]
            for unit in late:
                self._queue.remove(unit)
        for unit in late:
            unit.settle(exc)
        answer(late)

    def _step_down(self, leader: Leader | None) -> None:
        """The lead ends without `_next_batch` (a failure): pass it on if it is
        `leader`'s (None: whoever leads, from the leading thread)."""
        with self._lock:
            if leader is not None and self._leader is not leader:
                return
            handed = self._hand_over()
        self._pass_lead(handed)

    def _hand_over(self) -> tuple[Waiting, Leader] | None:
        """Under the lock: the next in line takes the lead, or nobody leads."""
        while self._queue and self._queue[0].cancelled:
            self._queue.popleft()
        if not self._queue:
            self._leader = None
            return None
        successor = self._queue[0]
        lead: Leader = successor if successor.loop is None else LoopLead(successor.loop)
        self._leader = lead
        return successor, lead

    def _pass_lead(self, handed: tuple[Waiting, Leader] | None) -> None:
        """Wake the new leader: a thread leads in its own thread; a coroutine's loop
        starts a lead that waits there for a slot."""
        if handed is None:
            return
        successor, lead = handed
        if isinstance(lead, Waiting):
            assert successor.event is not None
            successor.lead = True
            successor.event.set()
            return
        try:
            lead.loop.call_soon_threadsafe(self._start, lead)
        except RuntimeError:  # its loop is closed: its coroutines wait no more
            with self._lock:
                successor.cancelled = True
            self._step_down(lead)

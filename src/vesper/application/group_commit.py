"""Group commit: concurrent single submissions share one store call.

Under a burst every HTTP request used to commit its own job: one round trip, one
statement, one commit each, and the API process spent half its CPU on store calls
(W5). Here the first caller to find no commit in flight becomes the leader: it submits
every job waiting (up to `max_batch`) in one call, answers each waiting caller with its
own result, and hands the lead to the next caller in line. A caller is answered only
after the commit that holds its job, so an acknowledged job is as durable as before;
a caller that finds nobody else waiting commits alone, as before.

One caller's job cannot fail the others: a batch that raises anything but
StoreUnavailable (an IdempotencyConflict, a row the database refuses) is committed
again one job at a time, so that each caller gets its own outcome. A batch is atomic,
so nothing of the failed attempt was kept.

Two front ends share that rule (`commit_together`): `GroupCommit` for threads (the
Python API, large HTTP bodies), and `AsyncGroupCommit` for the coroutines of an event
loop (HTTP submissions), where a waiting request holds no thread and no store slot:
only each batch's store call runs in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from vesper.application.ports import JobRepository, Submitted
from vesper.domain.errors import StoreUnavailable
from vesper.domain.submission import NewJob

SubmitResult = Submitted | BaseException


def commit_together(jobs: JobRepository, batch: list[NewJob]) -> list[SubmitResult]:
    """`jobs.submit(batch)`, and each job's own outcome: a batch that fails for any
    reason but StoreUnavailable is committed again one job at a time."""
    try:
        return list(jobs.submit(batch))
    except StoreUnavailable as exc:
        return [exc] * len(batch)
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
        return [outcome for job in batch for outcome in commit_together(jobs, [job])]


class _Waiting:
    """One caller's job, and what its commit gave it."""

    __slots__ = ("error", "job", "jobs", "lead", "ready", "result")

    def __init__(self, jobs: JobRepository, job: NewJob) -> None:
        self.jobs = jobs
        self.job = job
        self.ready = threading.Event()  # answered, or handed the lead
        self.lead = False
        self.result: Submitted | None = None
        self.error: BaseException | None = None

    def answer(self) -> Submitted:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class GroupCommit:
    """Submits single jobs from many threads in shared batches of at most `max_batch`."""

    def __init__(self, max_batch: int = 1000) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._leading = False

    def submit(self, jobs: JobRepository, job: NewJob) -> Submitted:
        """`jobs.submit([job])[0]`, possibly committed together with other callers' jobs."""
        me = _Waiting(jobs, job)
        with self._lock:
            self._queue.append(me)
            lead = not self._leading
            self._leading = True
        if not lead:
            me.ready.wait()
            if not me.lead:
                return me.answer()
        self._lead(me)
        return me.answer()

    def _lead(self, me: _Waiting) -> None:
        """Commit batches until `me` is answered, then pass the lead on (or drop it)."""
        try:
            while me.result is None and me.error is None:
                with self._lock:
                    batch = self._take()
                self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.ready.set()
                else:
                    self._leading = False

    def _take(self) -> list[_Waiting]:
        """The oldest waiting jobs for one store, in arrival order (under the lock)."""
        first = self._queue.popleft()
        batch = [first]
        while self._queue and len(batch) < self._max_batch and self._queue[0].jobs is first.jobs:
            batch.append(self._queue.popleft())
        return batch

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = commit_together(batch[0].jobs, [waiting.job for waiting in batch])
        except BaseException as exc:  # nobody may be left waiting
            outcomes = [exc] * len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiting.error = outcome
            else:
                waiting.result = outcome
            waiting.ready.set()


# Runs a blocking call (in a thread) and returns its result: the HTTP store gate. The
# second argument is when the batch's oldest job began to wait (time.monotonic()): the
# gate bounds the batch's wait from then, not from the start of its commit.
RunBlocking = Callable[[Callable[[], list[SubmitResult]], float], Awaitable[list[SubmitResult]]]


class _AsyncWaiting(NamedTuple):
    """One coroutine's job, and since when it waits (time.monotonic())."""

    jobs: JobRepository
    job: NewJob
    future: asyncio.Future[Submitted]
    since: float


class AsyncGroupCommit:
    """Submits single jobs from the coroutines of one event loop in shared batches.

    The first submission to find no commit in flight starts a leader task; it commits
    every job waiting (up to `max_batch`, one store per batch) through `run`, answers
    each waiting coroutine, and ends when nobody waits. A waiting coroutine that is
    cancelled (a request past its write timeout) stops waiting: its job is dropped if
    its commit has not started, and may still be committed if it has (as a store call
    abandoned in a thread may).
    """

    def __init__(self, run: RunBlocking, max_batch: int = 1000) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self._max_batch = max_batch
        # (store, job, its caller's future, when it began to wait)
        self._queue: deque[_AsyncWaiting] = deque()
        self._leader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, jobs: JobRepository, job: NewJob) -> Submitted:
        """`jobs.submit([job])[0]`, possibly committed together with other jobs."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # served again on a new loop (an app reused by tests): what the old loop left
            # behind, a leader it closed over without cancelling, can never run again
            self._queue.clear()
            self._leader = None
            self._loop = loop
        future: asyncio.Future[Submitted] = loop.create_future()
        self._queue.append(_AsyncWaiting(jobs, job, future, time.monotonic()))
        if self._leader is None:
            self._leader = asyncio.create_task(self._lead())
        return await future

    async def _lead(self) -> None:
        try:
            while self._queue:
                first = self._queue.popleft()
                if first.future.done():  # its request stopped waiting: never commit it
                    continue
                batch = [first]
                while (
                    self._queue
                    and len(batch) < self._max_batch
                    and self._queue[0].jobs is first.jobs
                ):
                    waiting = self._queue.popleft()
                    if not waiting.future.done():
                        batch.append(waiting)
                try:
                    outcomes = await self._run(
                        functools.partial(commit_together, first.jobs, [w.job for w in batch]),
                        first.since,
                    )
                except asyncio.CancelledError:
                    for waiting in batch:
                        waiting.future.cancel()
                    raise
                except Exception as exc:  # the gate's StoreUnavailable, a thread's failure
                    outcomes = [exc] * len(batch)
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    if waiting.future.done():  # its request stopped waiting
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.future.set_exception(outcome)
                    else:
                        waiting.future.set_result(outcome)
        finally:
            for waiting in self._queue:  # only when the leader itself was cancelled
                waiting.future.cancel()
            self._queue.clear()
            self._leader = None

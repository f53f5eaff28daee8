"""Waiting for jobs to finish: GET /jobs/{id}?wait= and `app.wait`.

One `JobWaits` per process serves every waiter, threads and coroutines alike: waiters
register the job they wait for, and one reader thread looks all their jobs up in one
store call (`get_many`, through the store gate) whenever jobs may have finished, then
answers those whose job is done, dlq or cancelled (or gone). A thousand waiters thus
cost one read at a time, never a connection each. The reader reads when poked (the
PostgreSQL listener of finished jobs), and at least every `poll` seconds while anyone
waits (the other stores have no notification; PostgreSQL's poll only covers a
notification lost while its listener reconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from vesper.application.ports import JobRepository
from vesper.domain.errors import JobNotFound
from vesper.domain.job import JobId, JobRecord
from vesper.domain.states import FINISHED

log = logging.getLogger("vesper.waits")

T = TypeVar("T")
# how a read reaches the store: through the process's store gate
Read = Callable[[Callable[[], list[JobRecord]]], list[JobRecord]]

MAX_WAIT_S = 60.0  # the longest wait a request may ask for
# reads follow each other at least this far apart: a burst of notifications (a drain
# commits hundreds of batches a second) costs one read per gap, not one each
MIN_READ_GAP_S = 0.005


class _Waiter:
    """One caller waiting for `job_id`: a thread (`event`) or a coroutine (`future`)."""

    __slots__ = ("event", "future", "job", "job_id", "loop")

    def __init__(self, job_id: JobId, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.job_id = job_id
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.job: JobRecord | None = None  # set when answered; None then: the job is gone


class JobWaits:
    """Args:
    jobs: the repository the waited jobs are read from.
    read: runs a read through the store gate.
    poll: seconds between reads while anyone waits and no poke comes.
    """

    def __init__(self, jobs: JobRepository, read: Read, *, poll: float) -> None:
        self._jobs = jobs
        self._read = read
        self._poll = poll
        self._lock = threading.Lock()
        self._waiters: dict[JobId, list[_Waiter]] = {}
        self._wake = threading.Event()  # a poke, a new waiter, or close
        self._closed = False
        self._thread: threading.Thread | None = None
        self.reads = 0  # store calls made so far (tests and benchmarks look)

    # -- the two fronts -------------------------------------------------------------------

    def wait_blocking(self, job_id: JobId, timeout: float) -> tuple[JobRecord, bool]:
        """The job once finished, or as it is when `timeout` seconds end; and whether it
        finished. Raises JobNotFound (an unknown job, or one deleted meanwhile)."""
        waiter = self._register(_Waiter(job_id))
        assert waiter.event is not None
        try:
            answered = waiter.event.wait(timeout)
        finally:
            self._unregister(waiter)
        return self._answer(waiter, answered)

    async def wait(self, job_id: JobId, timeout: float) -> tuple[JobRecord, bool]:
        """As wait_blocking, for a coroutine: waiting holds no thread."""
        waiter = self._register(_Waiter(job_id, asyncio.get_running_loop()))
        assert waiter.future is not None
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            answered = True
        except TimeoutError:
            answered = False
        finally:
            self._unregister(waiter)
        if answered and waiter.job is not None:
            return waiter.job, True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._answer, waiter, False)

    def poke(self) -> None:
        """Jobs may have finished: read the waited ones now (thread-safe)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the reader; waiters still waiting get their answer when they time out."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    # -- internals ------------------------------------------------------------------------

    def _answer(self, waiter: _Waiter, answered: bool) -> tuple[JobRecord, bool]:
        if answered and waiter.job is not None:
            return waiter.job, True
        job = self._read(functools.partial(self._jobs.get_many, [waiter.job_id]))  # latest
        if not job:
            raise JobNotFound(waiter.job_id)
        return job[0], job[0].status in FINISHED

    def _register(self, waiter: _Waiter) -> _Waiter:
        with self._lock:
            self._waiters.setdefault(waiter.job_id, []).append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vesper-waits", daemon=True)
                self._thread.start()
        self._wake.set()  # its first read now: the job may be finished already
        return waiter

    def _unregister(self, waiter: _Waiter) -> None:
        with self._lock:
            waiting = self._waiters.get(waiter.job_id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[waiter.job_id]

    def _run(self) -> None:
        last_read = 0.0
        while not self._closed:
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._closed:
                return
            with self._lock:
                wanted = list(self._waiters)
            if not wanted:
                continue
            gap = last_read + MIN_READ_GAP_S - time.monotonic()
            if gap > 0:
                time.sleep(gap)
            last_read = time.monotonic()
            try:
                found = self._read(functools.partial(self._jobs.get_many, wanted))
                self.reads += 1
            except Exception as exc:  # the store is down: the next round tries again
                log.warning("reading %d waited jobs failed: %s", len(wanted), exc)
                continue
            self._settle(wanted, found)

    def _settle(self, wanted: Sequence[JobId], found: list[JobRecord]) -> None:
        by_id = {job.id: job for job in found}
        answered: list[_Waiter] = []
        with self._lock:
            for job_id in wanted:
                job = by_id.get(job_id)
                if job is not None and job.status not in FINISHED:
                    continue
                for waiter in self._waiters.pop(job_id, []):
                    waiter.job = job  # None: deleted (only a finished job can be)
                    answered.append(waiter)
        _wake(answered)


def _wake(waiters: list[_Waiter]) -> None:
    """Threads at once, coroutines on their loops (one call per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
    for waiter in waiters:
        if waiter.event is not None:
            waiter.event.set()
        elif waiter.loop is not None:
            by_loop.setdefault(waiter.loop, []).append(waiter)
    for loop, answered in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
            loop.call_soon_threadsafe(_resolve, answered)


def _resolve(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        if waiter.future is not None and not waiter.future.done():
            waiter.future.set_result(None)

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
"""

from __future__ import annotations

import threading
from collections import deque

from vesper.application.ports import JobRepository, Submitted
from vesper.domain.errors import StoreUnavailable
from vesper.domain.submission import NewJob


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
            results = batch[0].jobs.submit([waiting.job for waiting in batch])
        except StoreUnavailable as exc:
            for waiting in batch:
                waiting.error = exc
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for waiting in batch:
                    self._commit([waiting])
        else:
            for waiting, result in zip(batch, results, strict=True):
                waiting.result = result
        finally:
            for waiting in batch:
                if waiting.result is not None or waiting.error is not None:
                    waiting.ready.set()

"""Group commit of outcomes: attempts that end together are recorded in one store call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from vesper.application.execution import Outcome
from vesper.domain.job import JobRecord

log = logging.getLogger("vesper.worker")

# records outcomes; returns the stored jobs whose outcome was recorded
Write = Callable[[Sequence[Outcome]], Awaitable[list[JobRecord]]]


class OutcomeRecorder:
    """Queues outcomes and writes whatever accumulated while the previous write ran.

    A write that fails (the store is down) is retried with a capped backoff for as long
    as `give_up_after` allows; past it the lease has expired anyway and another worker
    owns the job, so the outcome is dropped (and logged).
    """

    def __init__(self, write: Write, *, give_up_after: float) -> None:
        self._write = write
        self._give_up_after = give_up_after
        self._pending: list[tuple[Outcome, asyncio.Future[JobRecord | None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, outcome: Outcome) -> JobRecord | None:
        """The stored job once written (its status says how it ended: done, failed or
        dlq); None if the job's lease was lost meanwhile."""
        future: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            written = await self._write_with_retry([outcome for outcome, _ in batch])
            stored = {job.id: job for job in written}
            for outcome, future in batch:
                if not future.done():
                    future.set_result(stored.get(outcome.job.id))

    async def _write_with_retry(self, outcomes: list[Outcome]) -> list[JobRecord]:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                return await self._write(outcomes)
            except Exception as exc:
                if time.monotonic() - started > self._give_up_after:
                    log.error(
                        "could not record %d outcomes for %.0fs, dropping them: %s",
                        len(outcomes),
                        self._give_up_after,
                        exc,
                    )
                    return []
                log.warning("recording %d outcomes failed, retrying: %s", len(outcomes), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

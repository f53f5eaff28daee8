"""The pruner: deletes finished jobs past their retention, in every worker process.

Every prune interval (jittered, so that a fleet started together does not prune in
step; counted from the start of the last round, so that a job waits at most its
retention plus one interval however long a round took) it deletes batches on the main lane until one comes back short. Between two
batches it leaves the store alone for as long as the last batch took, so a backlog
of old jobs takes at most half the store's time from claims (SQLite has one writer).
Any number of processes may prune at once: the store skips rows another pruner holds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from vesper.domain.states import Status
from vesper.entrypoints.worker.lanes import Lane

log = logging.getLogger("vesper.worker")

# A round's bound: a backlog larger than this many batches waits for the next round.
MAX_BATCHES_PER_ROUND = 2000

Prune = Callable[[], dict[Status, int]]


class Pruner:
    """Runs from `start()` until `stop()`.

    Args:
        prune: one batch (the PruneJobs use case); returns how many it deleted.
        batch: the batch size: a batch that deleted fewer ends the round.
        interval: seconds between rounds (VESPER_PRUNE_INTERVAL).
    """

    def __init__(self, *, prune: Prune, batch: int, lane: Lane, interval: float) -> None:
        self.prune = prune
        self.batch = batch
        self.lane = lane
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        started = time.monotonic()
        while True:
            # below the interval: a batch of its own takes time too
            next_round = started + self.interval * random.uniform(0.75, 0.95)
            await asyncio.sleep(max(0.0, next_round - time.monotonic()))
            started = time.monotonic()
            try:
                await self.round()
                self._failures = 0
            except Exception as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % 10 == 0:
                    log.warning("pruning failed (%d in a row): %s", self._failures, exc)

    async def round(self) -> dict[Status, int]:
        """Delete batches until one is short (or the round's bound); returns the counts."""
        total: dict[Status, int] = {}
        for _ in range(MAX_BATCHES_PER_ROUND):
            started = time.monotonic()
            counts = await self.lane.run(self.prune)
            for status, count in counts.items():
                total[status] = total.get(status, 0) + count
            if sum(counts.values()) < self.batch:
                break
            await asyncio.sleep(time.monotonic() - started)  # the store's other callers' turn
        if total:
            log.info(
                "pruned %s finished jobs past their retention",
                ", ".join(f"{n} {status.value}" for status, n in sorted(total.items())),
            )
        return total

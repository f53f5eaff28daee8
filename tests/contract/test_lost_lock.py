"""The suite checks itself: its lost-row-lock race catches a store that checks a lease
and then writes without holding the row, on every run (not one run in two)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime

import pytest

from vesper.adapters.memory import InMemoryJobRepository, InMemoryStore
from vesper.domain.job import JobRecord, LeaseRef
from vesper.testing import RaceContract, StoreOpener

RUNS = 3  # each run must catch it
ROUND_TRIP_S = 0.0002  # a statement's round trip on a local database


class UnlockedJobs(InMemoryJobRepository):
    """The in-memory repository with its fenced updates broken as a SQL store's would be
    whose UPDATE neither locks the row nor repeats the fence: read and check the lease,
    then, a round trip later, write what the check saw. Every statement costs a round
    trip, as on a database (it is also when other threads run)."""

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        time.sleep(ROUND_TRIP_S)
        return super().expire(worker_ids=worker_ids, now=now)

    def _fenced(
        self,
        refs: Sequence[LeaseRef],
        now: datetime | None,
        change: Callable[[JobRecord, LeaseRef, datetime], JobRecord],
    ) -> list[JobRecord]:
        at = now or self.now()
        changed: list[JobRecord] = []
        for ref in refs:
            time.sleep(ROUND_TRIP_S)
            job = self.get(ref.job_id)  # the SELECT, its lock released at once
            if job.holds(ref, at):
                time.sleep(ROUND_TRIP_S)  # to the UPDATE
                with self._lock:
                    changed.append(self._put(change(job, ref, at)))
        return changed


def unlocked_store() -> StoreOpener:
    store = InMemoryStore()
    store.jobs = UnlockedJobs()
    return lambda: nullcontext(store)


@pytest.mark.parametrize("action", ["complete", "fail", "renew"])
def test_the_race_catches_a_store_that_does_not_lock_the_row(action: str) -> None:
    contract = RaceContract()
    for run in range(RUNS):
        with pytest.raises(AssertionError, match="rounds:"):
            contract.test_a_fenced_update_racing_expiry_changes_the_job_once(
                unlocked_store(), action
            )
        assert run < RUNS


def test_the_same_race_passes_the_store_it_was_broken_from() -> None:
    store = InMemoryStore()
    contract = RaceContract()
    for action in ("complete", "fail", "renew"):
        contract.test_a_fenced_update_racing_expiry_changes_the_job_once(
            lambda: nullcontext(store), action
        )

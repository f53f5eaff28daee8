"""Queue limits under concurrent claimers: threads released together on several store
handles (on PostgreSQL, several connection pools) never take more than a limit allows.

Each round, every claimer claims until the queue yields nothing and holds what it got:
whatever the interleaving, exactly the limit's worth is claimed in all.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import cast

import pytest

from vesper.application.ports import (
    JobRepository,
    QueueingCompletingJobRepository,
    QueueingJobRepository,
)
from vesper.domain.job import JobRecord
from vesper.domain.queues import QueueChange
from vesper.testing.fixtures import (
    LEASE,
    StoreFixtures,
    StoreOpener,
    at,
    claim,
    new_job,
    ref,
    submit,
)
from vesper.testing.races_contract import THREADS, together

ROUNDS = 3


class QueueRaceContract(StoreFixtures):
    @pytest.fixture
    def handles(
        self, queueing: QueueingJobRepository, store_opener: StoreOpener
    ) -> Iterator[list[QueueingJobRepository]]:
        with ExitStack() as stack:
            yield [
                cast(QueueingJobRepository, stack.enter_context(store_opener()).jobs)
                for _ in range(3)
            ]

    def _race(self, handles: Sequence[JobRepository], now: float) -> list[JobRecord]:
        def claim_all(i: int, repo: JobRepository) -> list[JobRecord]:
            rng = random.Random(i)
            mine: list[JobRecord] = []
            # bounded: a limit lets at most a few through, whatever the store does
            for _ in range(50):
                queues = ["q"] if rng.random() < 0.5 else None  # one queue, or every queue
                batch = claim(
                    repo, now=at(now), worker_id=f"w{i}", limit=rng.randint(1, 4), queues=queues
                )
                if not batch:
                    break
                mine.extend(batch)
            return mine

        return [job for mine in together(handles, THREADS, claim_all) for job in mine]

    def test_concurrency_holds_under_concurrent_claimers(
        self, handles: list[QueueingJobRepository]
    ) -> None:
        repo = handles[0]
        submit(repo, *(new_job(queue="q") for _ in range(30)))
        repo.configure_queue("q", QueueChange(concurrency=3))
        for round_ in range(ROUNDS):
            claimed = self._race(handles, now=round_ + 1)
            assert len(claimed) == 3, f"round {round_}: {len(claimed)} claimed for concurrency 3"
            repo.complete([ref(job) for job in claimed], now=at(round_ + 1.5))

    def test_key_concurrency_holds_under_concurrent_claimers(
        self, handles: list[QueueingJobRepository]
    ) -> None:
        repo = handles[0]
        keys = [f"k{i % 6}" for i in range(36)]
        submit(repo, *(new_job(queue="q", concurrency_key=k) for k in keys))
        repo.configure_queue("q", QueueChange(key_concurrency=1))
        for round_ in range(ROUNDS):
            claimed = self._race(handles, now=round_ + 1)
            per_key = Counter(job.concurrency_key for job in claimed)
            assert per_key == Counter({f"k{i}": 1 for i in range(6)}), f"round {round_}"
            repo.complete([ref(job) for job in claimed], now=at(round_ + 1.5))

    def test_rate_holds_under_concurrent_claimers(
        self, handles: list[QueueingJobRepository]
    ) -> None:
        repo = handles[0]
        submit(repo, *(new_job(queue="q") for _ in range(40)))
        repo.configure_queue("q", QueueChange(rate="5/1h"))
        assert len(self._race(handles, now=1)) == 5
        assert self._race(handles, now=2) == []

    def test_limits_changed_elsewhere_hold_at_once(
        self, handles: list[QueueingJobRepository]
    ) -> None:
        """A handle that has just claimed from a queue limited by `concurrency` alone
        (which it may remember for a moment) keeps a rate another handle sets meanwhile:
        in a claim, and in a completion with its next claim."""
        mine, other = handles[0], handles[1]
        submit(mine, *(new_job(queue="q") for _ in range(20)))
        mine.configure_queue("q", QueueChange(concurrency=10))
        first = claim(mine, now=at(1), queues=["q"], limit=2)
        assert len(first) == 2
        other.configure_queue("q", QueueChange(rate="1/1h"))
        assert len(claim(mine, now=at(2), queues=["q"], limit=5)) == 1
        assert claim(mine, now=at(3), queues=["q"], limit=5) == []
        if mine.capabilities.complete_and_claim:
            completing = cast(QueueingCompletingJobRepository, mine)
            mine.configure_queue("q", QueueChange(rate=None, concurrency=10))
            assert len(claim(mine, now=at(4), queues=["q"], limit=1)) == 1
            other.configure_queue("q", QueueChange(rate="1/1h"))
            done, claimed = completing.complete_and_claim(
                [ref(first[0])], worker_id="w", limit=5, lease=LEASE, queues=["q"], now=at(5)
            )
            # the rate's window counts from its setting: one claim, not concurrency's five
            assert (len(done), len(claimed)) == (1, 1)

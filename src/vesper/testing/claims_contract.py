"""JobRepository.claim: what is due, in which order, how many, and never twice."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from vesper.application.ports import JobRepository
from vesper.domain.job import JobId
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    at,
    claim,
    claim_one,
    failure,
    ids,
    new_job,
    ref,
    submit,
)

PROCESS_JOBS = 2000
PROCESSES = 4
THREADS = 8
HOUR = timedelta(hours=1)

Outcome = tuple[str, list[str], str | None]  # worker id, the job ids it claimed, an error


class ClaimContract(StoreFixtures):
    def test_claim_returns_nothing_when_empty(self, jobs: JobRepository) -> None:
        assert claim(jobs, now=T0) == []

    def test_claim_leases_job_and_counts_attempt(self, jobs: JobRepository) -> None:
        [pending] = submit(jobs, new_job(), now=T0)
        now = at(2)
        [claimed] = claim(jobs, now=now, worker_id="w7", lease=timedelta(seconds=45))
        assert claimed.lease is not None
        expected = pending.claim(
            worker_id="w7", token=claimed.lease.token, now=now, lease=timedelta(seconds=45)
        )
        assert claimed == expected
        assert claimed.status is Status.PROCESSING
        assert claimed.attempts == 1
        assert claimed.worker_id == "w7"
        assert claimed.lease_expires_at == now + timedelta(seconds=45)
        assert jobs.get(claimed.id) == claimed

    def test_claim_constrained_to_limit(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job() for _ in range(5)), now=T0)
        assert len(claim(jobs, now=at(1), limit=2)) == 2
        assert len(claim(jobs, now=at(1), limit=2)) == 2
        assert len(claim(jobs, now=at(1), limit=2)) == 1
        assert claim(jobs, now=at(1), limit=2) == []

    def test_claim_with_zero_limit_claims_nothing(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        assert claim(jobs, now=at(1), limit=0) == []
        assert jobs.stats(now=at(1)).by_status[Status.PENDING] == 1

    def test_claim_takes_highest_priority_first(self, jobs: JobRepository) -> None:
        priorities = [3, 0, 10, 7, 0, 5, 10, 1]
        created = submit(jobs, *(new_job(priority=p) for p in priorities), now=T0)
        order = [claim_one(jobs, now=at(1)).priority for _ in created]
        assert order == sorted(priorities, reverse=True)

    def test_claim_is_fifo_by_run_at_within_a_priority(self, jobs: JobRepository) -> None:
        offsets = [5.000002, 1, 3, 5.000001, 2, 0.5]
        created = submit(jobs, *(new_job(run_at=at(-s)) for s in offsets), now=T0)
        expected = [job.id for job in sorted(created, key=lambda j: j.run_at)]
        assert [claim_one(jobs, now=T0).id for _ in created] == expected

    def test_claim_breaks_run_at_ties_by_insertion_order(self, jobs: JobRepository) -> None:
        # ids descending, so that ordering by id (or by random chance) is caught
        job_ids = sorted((JobId(uuid.uuid4()) for _ in range(6)), reverse=True)
        batch = [new_job(run_at=T0, job_id=i) for i in job_ids[:3]]
        submit(jobs, *batch, now=T0)
        for i in job_ids[3:]:
            submit(jobs, new_job(run_at=T0, job_id=i), now=at(1))
        assert [claim_one(jobs, now=at(2)).id for _ in job_ids] == job_ids

    def test_claim_breaks_ties_by_insertion_not_created_at(self, jobs: JobRepository) -> None:
        # a producer with a slow clock: the later insertion carries the earlier created_at
        [first] = submit(jobs, new_job(run_at=T0), now=at(10))
        [second] = submit(jobs, new_job(run_at=T0), now=at(5))
        assert ids(claim(jobs, now=at(20))) == [first.id, second.id]

    def test_claim_orders_by_priority_then_run_at_then_insertion(self, jobs: JobRepository) -> None:
        rng = random.Random(20251128)
        specs = [(p, rng.choice([-30, -20, -10])) for p in (0, 5, 10) for _ in range(4)]
        rng.shuffle(specs)
        created = submit(jobs, *(new_job(priority=p, run_at=at(s)) for p, s in specs), now=T0)
        expected = sorted(created, key=lambda j: (-j.priority, j.run_at, j.seq))
        assert ids(claim(jobs, now=T0, limit=100)) == ids(expected)

    def test_claim_returns_batch_in_claim_order(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(priority=i % 3) for i in range(9)), now=T0)
        expected = sorted(created, key=lambda j: (-j.priority, j.seq))
        claimed = claim(jobs, now=at(1), limit=6)
        assert ids(claimed) == ids(expected[:6])

    def test_claim_with_types_takes_only_those_types(self, jobs: JobRepository) -> None:
        submit(
            jobs,
            new_job("a", priority=1),
            new_job("b", priority=9),
            new_job("c", priority=5),
            new_job("a"),
            now=T0,
        )
        claimed = claim(jobs, now=at(1), types=["a", "c"])
        assert [j.type for j in claimed] == ["c", "a", "a"]
        assert [j.type for j in claim(jobs, now=at(1))] == ["b"]

    def test_claim_with_empty_types_claims_nothing(self, jobs: JobRepository) -> None:
        submit(jobs, new_job("a"), now=T0)
        assert claim(jobs, now=at(1), types=[]) == []
        assert len(claim(jobs, now=at(1), types=None)) == 1

    def test_claim_skips_jobs_not_yet_due(self, jobs: JobRepository) -> None:
        [later] = submit(jobs, new_job(run_at=at(60)), now=T0)
        [sooner] = submit(jobs, new_job(delay=timedelta(seconds=30)), now=T0)
        assert claim(jobs, now=at(29.999999)) == []
        assert ids(claim(jobs, now=at(30))) == [sooner.id]
        assert claim(jobs, now=at(59.999999)) == []
        assert ids(claim(jobs, now=at(60))) == [later.id]

    def test_claim_skips_processing_and_finished_jobs(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job() for _ in range(4)), now=T0)
        a, b, c, d = claim(jobs, now=at(1), limit=4)
        jobs.complete([ref(a)], now=at(2))
        jobs.fail([failure(b, None)], now=at(2))
        jobs.release([ref(d)], now=at(2))
        jobs.cancel(d.id, now=at(3))
        assert claim(jobs, now=at(4)) == []
        assert jobs.get(c.id).status is Status.PROCESSING

    def test_claim_takes_failed_job_once_due(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        first = claim_one(jobs, now=at(1))
        jobs.fail([failure(first, timedelta(seconds=10))], now=at(2))
        assert claim(jobs, now=at(11.999999)) == []
        again = claim_one(jobs, now=at(12))
        assert again.attempts == 2
        assert again.retries == 1
        assert again.lease is not None
        assert first.lease is not None
        assert again.lease.token != first.lease.token

    def test_claim_gives_a_fresh_token_at_every_claim(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        tokens = set()
        for i in range(3):
            job = claim_one(jobs, now=at(i))
            assert job.lease is not None
            tokens.add(job.lease.token)
            jobs.release([ref(job)], now=at(i))
        assert len(tokens) == 3

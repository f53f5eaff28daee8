"""find, stats, cancel and retry: what operators see and do."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from vesper.application.ports import JobRepository
from vesper.domain.errors import IllegalTransition, InvalidCursor, InvalidRequest, JobNotFound
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobQuery, encode_cursor
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    all_jobs,
    at,
    claim,
    claim_one,
    failure,
    ids,
    new_job,
    ref,
    submit,
)


def one_of_each_status(jobs: JobRepository) -> dict[Status, JobRecord]:
    """Six jobs, one per status, of types named after the status, priority 0..5."""
    created = submit(jobs, *(new_job(s.value, priority=i) for i, s in enumerate(Status)), now=T0)
    by_status = dict(zip(Status, created, strict=True))
    for status in (Status.PROCESSING, Status.DONE, Status.FAILED, Status.DLQ):
        claim(jobs, now=at(1), types=[status.value])
    jobs.complete([ref(jobs.get(by_status[Status.DONE].id))], now=at(2))
    jobs.fail([failure(jobs.get(by_status[Status.FAILED].id), timedelta(hours=1))], now=at(2))
    jobs.fail([failure(jobs.get(by_status[Status.DLQ].id), None)], now=at(2))
    jobs.cancel(by_status[Status.CANCELLED].id, now=at(2))
    current = {s: jobs.get(j.id) for s, j in by_status.items()}
    assert {s: j.status for s, j in current.items()} == {s: s for s in Status}
    return current


class FindContract(StoreFixtures):
    def test_find_on_empty_store_returns_empty_page(self, jobs: JobRepository) -> None:
        page = jobs.find(JobQuery())
        assert (page.jobs, page.next_cursor) == ((), None)

    def test_find_returns_newest_first(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(priority=i % 3) for i in range(5)), now=T0)
        created += submit(jobs, new_job(), now=at(1))
        assert list(jobs.find(JobQuery()).jobs) == list(reversed(created))

    def test_find_orders_by_insertion_not_created_at(self, jobs: JobRepository) -> None:
        [first] = submit(jobs, new_job(), now=at(10))
        [second] = submit(jobs, new_job(), now=at(5))  # inserted later, with an earlier now
        assert ids(jobs.find(JobQuery()).jobs) == [second.id, first.id]

    def test_find_filters_by_status(self, jobs: JobRepository) -> None:
        each = one_of_each_status(jobs)
        for status, job in each.items():
            assert list(jobs.find(JobQuery(status=status)).jobs) == [job]

    def test_find_filters_by_type_and_priority(self, jobs: JobRepository) -> None:
        a0, b0, a5, _ = submit(
            jobs,
            new_job("a"),
            new_job("b"),
            new_job("a", priority=5),
            new_job("c", priority=5),
            now=T0,
        )
        assert ids(jobs.find(JobQuery(type="a")).jobs) == [a5.id, a0.id]
        assert ids(jobs.find(JobQuery(priority=0)).jobs) == [b0.id, a0.id]
        assert ids(jobs.find(JobQuery(type="a", priority=5)).jobs) == [a5.id]
        assert jobs.find(JobQuery(type="a", priority=7)).jobs == ()
        assert jobs.find(JobQuery(type="missing")).jobs == ()

    def test_find_with_type_no_job_can_have_returns_empty_page(self, jobs: JobRepository) -> None:
        submit(jobs, new_job("email"), now=T0)
        for job_type in ("em%", "e_ail", "' OR 1=1 --", "x" * 5000, "nul\x00byte"):
            try:
                query = JobQuery(type=job_type)
            except InvalidRequest:
                continue  # the domain may refuse it before any store sees it
            assert jobs.find(query).jobs == (), job_type

    def test_find_combines_all_filters(self, jobs: JobRepository) -> None:
        submit(jobs, new_job("a", priority=2), new_job("a", priority=2), now=T0)
        [claimed] = claim(jobs, now=at(1), limit=1)
        query = JobQuery(status=Status.PROCESSING, type="a", priority=2)
        assert ids(jobs.find(query).jobs) == [claimed.id]
        assert jobs.find(JobQuery(status=Status.PROCESSING, type="b")).jobs == ()

    def test_find_constrained_to_limit(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job() for _ in range(5)), now=T0)
        page = jobs.find(JobQuery(limit=2))
        assert ids(page.jobs) == list(reversed(ids(created)))[:2]  # the two newest
        assert page.next_cursor is not None

    def test_find_pages_cover_every_job_exactly_once(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(priority=i % 2) for i in range(23)), now=T0)
        pages, cursor = [], None
        for _ in range(10):  # bounded: a cursor that does not advance must not hang the test
            page = jobs.find(JobQuery(limit=5, cursor=cursor))
            pages.append(ids(page.jobs))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert [i for p in pages for i in p] == list(reversed(ids(created)))

    def test_find_pages_with_filter_cover_every_match_once(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(priority=i % 3) for i in range(20)), now=T0)
        found = all_jobs(jobs, JobQuery(priority=1, limit=2))
        assert ids(found) == [j.id for j in reversed(created) if j.priority == 1]

    def test_find_last_full_page_has_no_cursor(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job() for _ in range(4)), now=T0)
        first = jobs.find(JobQuery(limit=2))
        second = jobs.find(JobQuery(limit=2, cursor=first.next_cursor))
        assert len(second.jobs) == 2
        assert second.next_cursor is None

    def test_find_cursor_ignores_jobs_submitted_since(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job() for _ in range(4)), now=T0)
        first = jobs.find(JobQuery(limit=2))
        submit(jobs, new_job(), now=at(1))
        second = jobs.find(JobQuery(limit=2, cursor=first.next_cursor))
        assert ids(second.jobs) == [created[1].id, created[0].id]

    def test_find_with_any_well_formed_cursor_does_not_crash(self, jobs: JobRepository) -> None:
        # the domain decides which cursors are valid; a store must answer every one it lets
        # through (GET /jobs?cursor=... is user input): a page, or InvalidCursor
        [job] = submit(jobs, new_job(), now=T0)
        assert jobs.find(JobQuery(cursor=encode_cursor(0))).jobs == ()
        for cursor in map(encode_cursor, (2**63 - 1, 2**63, 10**19 - 1)):
            try:
                query = JobQuery(cursor=cursor)
                page = jobs.find(query)
            except InvalidCursor:
                continue
            assert ids(page.jobs) == [job.id], cursor

    def test_find_with_bad_cursor_raises_invalid_cursor(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        forged = ("s5", "s5.00000000", encode_cursor(5).replace("s5.", "s6."))
        for bad in ("garbage", "s-1", "s1' OR 1=1--", "", "s" + "9" * 30, *forged):
            with pytest.raises(InvalidCursor):
                jobs.find(JobQuery(cursor=bad))


class StatsContract(StoreFixtures):
    def test_stats_of_empty_store(self, jobs: JobRepository) -> None:
        stats = jobs.stats(now=T0)
        assert (stats.total, stats.oldest_due_run_at, stats.now) == (0, None, T0)
        assert stats.oldest_due_age == timedelta(0)

    def test_stats_counts_by_status_and_priority(self, jobs: JobRepository) -> None:
        one_of_each_status(jobs)
        submit(jobs, new_job(priority=0), new_job(priority=9), new_job(priority=9), now=at(3))
        stats = jobs.stats(now=at(3))
        counts = {key: n for key, n in stats.counts.items() if n}
        expected = {(s, i): 1 for i, s in enumerate(Status)}
        expected[(Status.PENDING, 0)] += 1
        expected[(Status.PENDING, 9)] = 2
        assert counts == expected
        assert stats.total == 9
        assert stats.by_status[Status.PENDING] == 4
        assert stats.by_priority[9] == 2

    def test_stats_oldest_due_is_earliest_due_run_at(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(run_at=at(-50)), now=T0)  # claimed below: not waiting
        claim(jobs, now=T0)
        submit(
            jobs,
            new_job(run_at=at(-20.5)),
            new_job(run_at=at(-10)),
            new_job(run_at=at(100)),  # not due yet
            now=T0,
        )
        stats = jobs.stats(now=T0)
        assert stats.oldest_due_run_at == at(-20.5)
        assert stats.oldest_due_age == timedelta(seconds=20.5)
        assert jobs.stats(now=at(-30)).oldest_due_run_at is None

    def test_stats_oldest_due_counts_failed_jobs_once_due(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        jobs.fail([failure(claim_one(jobs, now=T0), timedelta(seconds=10))], now=T0)
        assert jobs.stats(now=at(5)).oldest_due_run_at is None
        assert jobs.stats(now=at(15)).oldest_due_run_at == at(10)


class CancelContract(StoreFixtures):
    def test_cancel_pending_job(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(), now=T0)
        cancelled = jobs.cancel(job.id, now=at(1))
        assert cancelled == job.cancel(now=at(1))
        assert (cancelled.status, cancelled.finished_at) == (Status.CANCELLED, at(1))
        assert jobs.get(job.id) == cancelled
        assert claim(jobs, now=at(2)) == []

    def test_cancel_failed_job(self, jobs: JobRepository) -> None:
        each = one_of_each_status(jobs)
        cancelled = jobs.cancel(each[Status.FAILED].id, now=at(3))
        assert cancelled.status is Status.CANCELLED
        assert claim(jobs, now=at(10_000), types=[Status.FAILED.value]) == []

    # a processing job gets a cancel request instead (cancel_request_contract.py)
    @pytest.mark.parametrize("status", [Status.DONE, Status.DLQ, Status.CANCELLED])
    def test_cancel_raises_illegal_transition(self, jobs: JobRepository, status: Status) -> None:
        job = one_of_each_status(jobs)[status]
        with pytest.raises(IllegalTransition):
            jobs.cancel(job.id, now=at(3))
        assert jobs.get(job.id) == job

    def test_cancel_unknown_raises_job_not_found(self, jobs: JobRepository) -> None:
        with pytest.raises(JobNotFound):
            jobs.cancel(JobId(uuid.uuid4()), now=T0)


class RetryContract(StoreFixtures):
    @pytest.mark.parametrize("status", [Status.DLQ, Status.FAILED, Status.CANCELLED])
    def test_retry_returns_job_to_pending_due_now(
        self, jobs: JobRepository, status: Status
    ) -> None:
        job = one_of_each_status(jobs)[status]
        retried = jobs.retry(job.id, now=at(3))
        assert retried == job.retry(now=at(3))
        assert (retried.status, retried.retries, retried.run_at) == (Status.PENDING, 0, at(3))
        assert (retried.finished_at, retried.lease) == (None, None)
        assert jobs.get(job.id) == retried
        assert ids(claim(jobs, now=at(3), types=[status.value])) == [job.id]

    def test_retry_resets_retries_of_dlq_job(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(max_retries=1), now=T0)
        for second in (1, 2):
            jobs.fail([failure(claim_one(jobs, now=at(second)), timedelta(0))], now=at(second))
        assert (jobs.get(job.id).status, jobs.get(job.id).retries) == (Status.DLQ, 1)
        retried = jobs.retry(job.id, now=at(5))
        assert (retried.retries, retried.attempts, retried.status) == (0, 2, Status.PENDING)

    @pytest.mark.parametrize("status", [Status.PENDING, Status.PROCESSING, Status.DONE])
    def test_retry_raises_illegal_transition(self, jobs: JobRepository, status: Status) -> None:
        job = one_of_each_status(jobs)[status]
        with pytest.raises(IllegalTransition):
            jobs.retry(job.id, now=at(3))
        assert jobs.get(job.id) == job

    def test_retry_unknown_raises_job_not_found(self, jobs: JobRepository) -> None:
        with pytest.raises(JobNotFound):
            jobs.retry(JobId(uuid.uuid4()), now=T0)

"""submit_in: jobs written in a transaction the caller holds open (optional capability);
idempotency and unique keys behave as in `submit`.

A store with `capabilities.transactional_submit` is a TransactionalJobRepository; its test
module overrides `caller_transactions` to say how a caller opens a transaction on the
store's database:

```python
@pytest.fixture
def caller_transactions(self) -> CallerTransactions:
    def begin(url_of_opener):  # -> a context manager yielding a connection
        ...
    return begin
```

The context manager it returns yields a connection in an open transaction, commits it on
a normal exit and rolls it back when the block raises. Without the capability these
tests skip; with it and without the fixture they fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import pytest

from vesper.application.ports import Submitted, TransactionalJobRepository
from vesper.domain.errors import IdempotencyConflict, JobNotFound
from vesper.domain.query import JobQuery
from vesper.domain.states import Status
from vesper.testing.fixtures import LEASE, StoreFixtures, StoreOpener, new_job

T = TypeVar("T")

CallerTransactions = Callable[[StoreOpener], AbstractContextManager[Any]]
"""Given the opener of a database, begins a caller's transaction on it."""

SETTLE = 0.3  # how long a blocked call is given to show that it waits (it must not return)
JOIN = 30.0  # the bound on every wait for a thread


class Rollback(Exception):
    """Raised inside a caller's transaction to roll it back."""


def rolled_back(begin: Callable[[], AbstractContextManager[Any]], work: Callable[[Any], T]) -> T:
    """`work(connection)` in a caller's transaction that is then rolled back."""
    try:
        with begin() as conn:
            result = work(conn)
            raise Rollback
    except Rollback:
        return result


class Call:
    """A store call on a thread of its own, its result or error kept."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as exc:
            self.error = exc

    def running_after(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return self._thread.is_alive()

    def outcome(self) -> Any:
        self._thread.join(JOIN)
        assert not self._thread.is_alive(), "the call did not end"
        if self.error is not None:
            raise self.error
        return self.result


class TransactionalSubmitContract(StoreFixtures):
    @pytest.fixture
    def caller_transactions(self) -> CallerTransactions | None:
        """How a caller begins a transaction on the store's database; override it."""
        return None

    @pytest.fixture
    def begin(
        self, store_opener: StoreOpener, caller_transactions: CallerTransactions | None
    ) -> Callable[[], AbstractContextManager[Any]]:
        with store_opener() as store:
            capable = store.jobs.capabilities.transactional_submit
        if not capable:
            pytest.skip("the store does not write in its caller's transactions")
        assert caller_transactions is not None, (
            "capabilities.transactional_submit is set: override the caller_transactions fixture"
        )
        return lambda: caller_transactions(store_opener)

    @staticmethod
    def _jobs(store: Any) -> TransactionalJobRepository:
        return cast(TransactionalJobRepository, store.jobs)

    def test_committed_jobs_exist_and_the_commit_is_heard_once(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        heard: list[str] = []
        with store_opener() as store:
            jobs = self._jobs(store)
            batch = [new_job("a", priority=1), new_job("b", key="k1"), new_job("c")]
            with begin() as conn:
                submitted = jobs.submit_in(conn, batch)
                jobs.after_commit(conn, lambda: heard.append("commit"))
            assert heard == ["commit"]
            assert [s.job.type for s in submitted] == ["a", "b", "c"]
            assert all(s.created for s in submitted)
            assert [s.job.seq for s in submitted] == sorted(s.job.seq for s in submitted)
            for s in submitted:
                assert jobs.get(s.job.id) == s.job
            claimed = jobs.claim(worker_id="w", limit=10, lease=LEASE)
            assert [j.type for j in claimed] == ["a", "b", "c"]

    def test_rolled_back_jobs_never_exist_and_no_commit_is_heard(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        heard: list[str] = []
        with store_opener() as store:
            jobs = self._jobs(store)

            def work(conn: Any) -> list[Submitted]:
                written = jobs.submit_in(conn, [new_job("a", key="k1"), new_job("b")])
                jobs.after_commit(conn, lambda: heard.append("commit"))
                return written

            submitted = rolled_back(begin, work)
            assert heard == []
            for s in submitted:
                with pytest.raises(JobNotFound):
                    jobs.get(s.job.id)
            assert list(jobs.find(JobQuery()).jobs) == []
            assert jobs.claim(worker_id="w", limit=10, lease=LEASE) == []
            # the key was never bound: a later submit binds it
            (again,) = jobs.submit([new_job("a", key="k1")])
            assert again.created

    def test_an_open_transactions_jobs_are_invisible_to_claims_and_reads(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)
            claim: Call | None = None
            with begin() as conn:
                (mine,) = jobs.submit_in(conn, [new_job("a")])
                assert list(jobs.find(JobQuery()).jobs) == []
                with pytest.raises(JobNotFound):
                    jobs.get(mine.job.id)
                # a claim meanwhile either finds nothing or waits for the transaction
                # (SQLite: for its write lock); it never takes the job before the commit
                claim = Call(lambda: jobs.claim(worker_id="w", limit=10, lease=LEASE))
                if not claim.running_after(SETTLE):
                    assert claim.outcome() == []
                    claim = None
            if claim is not None:
                claim.outcome()  # it waited for the commit: it may have the job now
            assert jobs.get(mine.job.id).id == mine.job.id

    def test_a_key_bound_earlier_is_replayed_or_conflicts(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)
            (bound,) = jobs.submit([new_job("a", payload={"n": 1}, key="k1")])
            with begin() as conn:
                (replay,) = jobs.submit_in(conn, [new_job("a", payload={"n": 1}, key="k1")])
            assert replay == Submitted(job=bound.job, created=False)
            with pytest.raises(IdempotencyConflict), begin() as conn:
                jobs.submit_in(conn, [new_job("a", payload={"n": 2}, key="k1")])
            assert len(jobs.find(JobQuery()).jobs) == 1

    @pytest.mark.parametrize(
        ("first_ends", "second_payload", "expected"),
        [
            ("commit", {"n": 1}, "replay"),
            ("commit", {"n": 2}, "conflict"),
            ("rollback", {"n": 2}, "created"),
        ],
    )
    def test_concurrent_transactions_with_one_key_wait_then_see_the_first(
        self,
        store_opener: StoreOpener,
        begin: Callable[[], AbstractContextManager[Any]],
        first_ends: str,
        second_payload: dict[str, int],
        expected: str,
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)

            def second() -> Submitted:
                with begin() as conn:
                    (result,) = jobs.submit_in(
                        conn, [new_job("a", payload=second_payload, key="k")]
                    )
                    return result

            try:
                with begin() as conn:
                    (first,) = jobs.submit_in(conn, [new_job("a", payload={"n": 1}, key="k")])
                    waiting = Call(second)
                    # the key (or SQLite's write lock) is held by this transaction
                    assert waiting.running_after(SETTLE), "the second did not wait"
                    if first_ends == "rollback":
                        raise Rollback
            except Rollback:
                pass
            if expected == "conflict":
                with pytest.raises(IdempotencyConflict):
                    waiting.outcome()
                return
            result = waiting.outcome()
            if expected == "replay":
                assert result == Submitted(job=first.job, created=False)
            else:
                assert result.created
                assert result.job.payload == {"n": 2}
                assert [j.id for j in jobs.find(JobQuery()).jobs] == [result.job.id]

    def test_a_unique_key_an_active_job_holds_returns_that_job(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)
            (holder,) = jobs.submit([new_job("a", unique_key="u1")])
            with begin() as conn:
                held, fresh = jobs.submit_in(
                    conn, [new_job("a", unique_key="u1"), new_job("a", unique_key="u2")]
                )
            assert held == Submitted(job=holder.job, created=False)
            assert fresh.created
            assert fresh.job.unique_key == "u2"
            assert len(jobs.find(JobQuery()).jobs) == 2
            # the holder finished: the key is free, in a caller's transaction too
            jobs.cancel(holder.job.id)
            with begin() as conn:
                (again,) = jobs.submit_in(conn, [new_job("a", unique_key="u1")])
            assert again.created
            assert again.job.id != holder.job.id
            assert jobs.get(again.job.id).unique_key == "u1"
            if jobs.capabilities.queues:
                # held per queue: the key in another queue makes a job of its own
                with begin() as conn:
                    (elsewhere,) = jobs.submit_in(conn, [new_job("a", queue="q1", unique_key="u1")])
                assert elsewhere.created
                assert (elsewhere.job.queue, elsewhere.job.unique_key) == ("q1", "u1")
                assert jobs.get(again.job.id).status is Status.PENDING

    @pytest.mark.parametrize("first_ends", ["commit", "rollback"])
    def test_concurrent_transactions_with_one_unique_key_make_one_job(
        self,
        store_opener: StoreOpener,
        begin: Callable[[], AbstractContextManager[Any]],
        first_ends: str,
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)

            def second() -> Submitted:
                with begin() as conn:
                    (result,) = jobs.submit_in(conn, [new_job("b", unique_key="u")])
                    return result

            try:
                with begin() as conn:
                    (first,) = jobs.submit_in(conn, [new_job("a", unique_key="u")])
                    waiting = Call(second)
                    # the key (or SQLite's write lock) is held by this transaction
                    assert waiting.running_after(SETTLE), "the second did not wait"
                    if first_ends == "rollback":
                        raise Rollback
            except Rollback:
                pass
            result = waiting.outcome()
            if first_ends == "commit":
                assert result == Submitted(job=first.job, created=False)
            else:
                assert result.created
                assert result.job.type == "b"
            assert [j.id for j in jobs.find(JobQuery()).jobs] == [result.job.id]

    def test_concurrent_transactions_with_one_unique_key_in_two_queues_make_two_jobs(
        self, store_opener: StoreOpener, begin: Callable[[], AbstractContextManager[Any]]
    ) -> None:
        with store_opener() as store:
            jobs = self._jobs(store)
            if not jobs.capabilities.queues:
                pytest.skip("the store has no named queues (capabilities.queues=False)")

            def second() -> Submitted:
                with begin() as conn:
                    (result,) = jobs.submit_in(conn, [new_job("b", queue="q2", unique_key="u")])
                    return result

            with begin() as conn:
                (first,) = jobs.submit_in(conn, [new_job("a", queue="q1", unique_key="u")])
                # the second may wait (SQLite's write lock) or not (PostgreSQL: another
                # index entry); committed after this one, it must not find it a holder
                waiting = Call(second)
                waiting.running_after(SETTLE)
            result = waiting.outcome()
            assert result.created
            assert (result.job.queue, result.job.unique_key) == ("q2", "u")
            assert {j.id for j in jobs.find(JobQuery()).jobs} == {first.job.id, result.job.id}

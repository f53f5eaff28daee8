"""What every contract test stands on: the one fixture an adapter overrides, and helpers.

An adapter's test module subclasses a contract class and overrides `store_factory`:

```python
class TestMyStore(StoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        def fresh() -> StoreOpener:                  # a new, empty database per call
            url = f"mydb:///{tmp_path / uuid4().hex}"
            return functools.partial(open_my_store, url)   # picklable: children reopen it
        return fresh
```

`StoreFactory()` makes a new, empty database and returns a `StoreOpener` for it; each
call of the opener opens another handle on that same database, as a context manager that
closes the handle on exit. Stores with `capabilities.multi_process` must hand out a
picklable opener (a module-level function, or `functools.partial` of one): the contract
sends it to child processes started with the 'spawn' method. Other stores may return the
same handle on every call.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import attrs
import pytest

from vesper.application.ports import JobRepository, QueueingJobRepository, Store, WorkerRegistry
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef
from vesper.domain.query import JobQuery
from vesper.domain.submission import JobRequest, Limits, NewJob, prepare

StoreOpener = Callable[[], AbstractContextManager[Store]]
"""Opens a handle on one database; the context manager closes it."""

StoreFactory = Callable[[], StoreOpener]
"""Makes a new, empty database and returns the opener of handles on it."""


@attrs.frozen
class StoreOutage:
    """How an adapter's test module takes a store's database away, for the error
    contract's tests (the optional fixture `store_outage`).

    `cut(opener)` is a context manager: while it lasts, the database that `opener`
    opens does not answer the store's handles already open (a server that refuses
    connections and has ended them, a lock held by another process); on exit it
    answers again. `reads_fail`: False when the store may still serve reads meanwhile
    (SQLite in WAL mode reads while another process holds the write lock).
    """

    cut: Callable[[StoreOpener], AbstractContextManager[None]]
    reads_fail: bool = True


T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
"""The tests' epoch: explicit `now=` values are T0 plus an offset (no test sleeps)."""

LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def new_job(
    job_type: str = "email",
    *,
    priority: int = 0,
    payload: Mapping[str, Any] | None = None,
    run_at: datetime | None = None,
    delay: timedelta | None = None,
    key: str | None = None,
    max_retries: int = 3,
    timeout: timedelta | None = None,
    trace_context: str | None = None,
    job_id: JobId | None = None,
    queue: str | None = None,
    concurrency_key: str | None = None,
    unique_key: str | None = None,
) -> NewJob:
    """A validated job, as the submit use case hands it to a store."""
    request = JobRequest(
        type=job_type,
        payload=payload if payload is not None else {},
        priority=priority,
        max_retries=max_retries,
        run_at=run_at,
        delay=delay,
        idempotency_key=key,
        timeout=timeout,
        trace_context=trace_context,
        queue=queue,
        concurrency_key=concurrency_key,
        unique_key=unique_key,
    )
    return prepare(
        request,
        job_id=job_id if job_id is not None else JobId(uuid.uuid4()),
        limits=Limits(),
        default_max_retries=3,
    )


def submit(jobs: JobRepository, *new: NewJob, now: datetime = T0) -> list[JobRecord]:
    """Submit `new` in one call; return the jobs (created or replayed)."""
    return [s.job for s in jobs.submit(list(new), now=now)]


def claim(
    jobs: JobRepository,
    *,
    now: datetime,
    worker_id: str = "w1",
    limit: int = 100,
    lease: timedelta = LEASE,
    types: Sequence[str] | None = None,
    queues: Sequence[str] | None = None,
) -> list[JobRecord]:
    """A claim; with `queues`, of a store that has them (capabilities.queues)."""
    if queues is None:
        return jobs.claim(worker_id=worker_id, limit=limit, lease=lease, types=types, now=now)
    return cast(QueueingJobRepository, jobs).claim(
        worker_id=worker_id, limit=limit, lease=lease, types=types, queues=queues, now=now
    )


def claim_one(jobs: JobRepository, *, now: datetime, worker_id: str = "w1") -> JobRecord:
    """Claim exactly one job (the test set it up so); fail loudly otherwise."""
    claimed = claim(jobs, now=now, worker_id=worker_id, limit=1)
    assert len(claimed) == 1, f"expected one claimable job at {now}, claimed {claimed}"
    return claimed[0]


def failure(job: JobRecord, retry_delay: timedelta | None, error: str = "boom") -> Failure:
    """The failure report of the holder of `job`'s current lease."""
    return Failure(lease=ref(job), error=error, retry_delay=retry_delay)


def ref(job: JobRecord) -> LeaseRef:
    """The lease reference the holder of `job`'s current lease presents."""
    assert job.lease is not None, f"job {job.id} holds no lease: {job.status}"
    return LeaseRef(job_id=job.id, token=job.lease.token)


def all_jobs(jobs: JobRepository, query: JobQuery | None = None) -> list[JobRecord]:
    """Every job matching `query`'s filters, newest first, following the cursors."""
    base = query or JobQuery(limit=1000)
    found: list[JobRecord] = []
    cursor: str | None = None
    while True:
        page = jobs.find(
            JobQuery(
                status=base.status,
                type=base.type,
                priority=base.priority,
                queue=base.queue,
                limit=base.limit,
                cursor=cursor,
            )
        )
        seen = {job.id for job in found}
        again = [job.id for job in page.jobs if job.id in seen]
        assert not again, f"cursor {cursor!r} returned jobs of an earlier page: {again}"
        found.extend(page.jobs)
        if page.next_cursor is None:
            return found
        assert page.jobs, f"an empty page came with a cursor: {page.next_cursor!r}"
        cursor = page.next_cursor


def ids(jobs: Sequence[JobRecord]) -> list[JobId]:
    return [job.id for job in jobs]


class StoreFixtures:
    """The fixtures of every contract class. Override `store_factory`, and
    `store_outage` when the store has a database that can go away."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        """Override: return a StoreFactory for the adapter under test (see module doc)."""
        raise NotImplementedError("a contract subclass must override the `store_factory` fixture")

    @pytest.fixture
    def store_outage(self) -> StoreOutage | None:
        """Override (optional): how to take the database away (see StoreOutage). None,
        the default, skips the outage tests: a store with no database to lose (the
        in-memory one) has no outage to survive."""
        return None

    @pytest.fixture
    def store_opener(self, store_factory: StoreFactory) -> StoreOpener:
        """The opener of this test's database, new and empty."""
        return store_factory()

    @pytest.fixture
    def store(self, store_opener: StoreOpener) -> Iterator[Store]:
        with store_opener() as store:
            yield store

    @pytest.fixture
    def jobs(self, store: Store) -> JobRepository:
        return store.jobs

    @pytest.fixture
    def workers(self, store: Store) -> WorkerRegistry:
        return store.workers

    @pytest.fixture
    def queueing(self, jobs: JobRepository) -> QueueingJobRepository:
        """The store's jobs, as a store with named queues; skips the test otherwise."""
        if not jobs.capabilities.queues:
            pytest.skip("the store has no named queues (capabilities.queues=False)")
        return cast(QueueingJobRepository, jobs)

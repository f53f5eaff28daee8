"""The error contract (vesper.application.ports): a store whose database goes away
raises StoreUnavailable, never a driver's own error, and the same store object works
again once the database is back.

These tests need the optional fixture `store_outage` (a StoreOutage): a store's test
module that does not provide it has them skipped, with the reason.
"""

from __future__ import annotations

import contextlib

import pytest

from vesper.application.ports import Store
from vesper.domain.errors import StoreUnavailable
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    StoreOpener,
    StoreOutage,
    all_jobs,
    at,
    ids,
    new_job,
    submit,
)
from vesper.testing.workers_contract import process

NO_OUTAGE = (
    "the store's test module provides no `store_outage` fixture: override it with a "
    "StoreOutage that takes the database away (a store without a database has none)"
)


class OutageContract(StoreFixtures):
    @pytest.fixture
    def outage(self, store_outage: StoreOutage | None) -> StoreOutage:
        if store_outage is None:
            pytest.skip(NO_OUTAGE)
        return store_outage

    def test_a_store_whose_database_goes_away_raises_store_unavailable_and_recovers(
        self, store: Store, store_opener: StoreOpener, outage: StoreOutage
    ) -> None:
        jobs, workers = store.jobs, store.workers
        [job] = submit(jobs, new_job(), now=T0)
        workers.register(process("w1"), now=T0)
        assert jobs.get(job.id) == job  # the store's connections are open and in use
        with outage.cut(store_opener):
            with pytest.raises(StoreUnavailable):
                jobs.submit([new_job()], now=at(1))
            with pytest.raises(StoreUnavailable):
                workers.heartbeat("w1", now=at(1))
            if outage.reads_fail:
                with pytest.raises(StoreUnavailable):
                    jobs.get(job.id)
            else:  # a store may serve reads meanwhile: then as the port says
                with contextlib.suppress(StoreUnavailable):
                    assert jobs.get(job.id) == job
        # the same objects, no reopening: a read and writes of both ports work again
        assert jobs.get(job.id) == job
        [later] = submit(jobs, new_job(), now=at(2))
        assert ids(all_jobs(jobs))[0] == later.id
        assert job.id in ids(all_jobs(jobs))
        assert workers.heartbeat("w1", now=at(2)) is True

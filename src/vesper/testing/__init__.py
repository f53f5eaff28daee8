"""vesper's storage contract suite, for the built-in stores and for custom adapters.

A storage adapter passes when a subclass of `StoreContract` that overrides the one
fixture `store_factory` passes under pytest:

```python
import functools, uuid
from contextlib import contextmanager
import pytest
from vesper.testing import StoreContract, StoreFactory, StoreOpener

@contextmanager
def open_my_store(url: str):                 # module level: picklable for child processes
    store = my_adapter.open_store(url, SystemClock(), StoreOptions())
    try:
        yield store
    finally:
        store.close()

class TestMyStore(StoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path) -> StoreFactory:
        def fresh() -> StoreOpener:          # a new, empty database at each call
            return functools.partial(open_my_store, f"mydb:///{tmp_path / uuid.uuid4().hex}")
        return fresh
```

`JobRepositoryContract` and `WorkerRegistryContract` check one port each; `StoreContract`
checks both. The Queue*Contract classes (in JobRepositoryContract) check named queues,
an optional capability (`capabilities.queues`): a store without it skips them. Capability flags (`store.jobs.capabilities`) skip what a store cannot do or
does not offer (`complete_and_claim` is optional). `FreeStore` wraps a store to take the
freedoms the port leaves it (a token per claimed job, results in another order, no
complete_and_claim): the suite passes such a store too.
The error contract's outage tests run when the store's test module also overrides
`store_outage` (a StoreOutage: how to take its database away), and are skipped otherwise.
A store declaring `transactional_submit` overrides `caller_transactions` too (how a caller
begins a transaction on its database: see `transactions_contract`).
`scratch_database(url)` (vesper.testing.scratch) makes a scratch database of any
SQLAlchemy URL (SQLite, PostgreSQL, MySQL/MariaDB, or one registered there). This package needs
pytest and hypothesis (vesper's `dev` extra).
"""

# ruff: noqa: E402  (the contract modules load after register_assert_rewrite, on purpose)
from __future__ import annotations

import pytest

# Before the submodules load: pytest then shows the operands of a failing assert there.
pytest.register_assert_rewrite(
    "vesper.testing.batch_contract",
    "vesper.testing.bulk_contract",
    "vesper.testing.cancel_request_contract",
    "vesper.testing.claims_contract",
    "vesper.testing.dashboard_contract",
    "vesper.testing.expiry_contract",
    "vesper.testing.fixtures",
    "vesper.testing.freedoms",
    "vesper.testing.leases_contract",
    "vesper.testing.management_contract",
    "vesper.testing.model",
    "vesper.testing.model_parts",
    "vesper.testing.outage_contract",
    "vesper.testing.postgres",
    "vesper.testing.queue_races_contract",
    "vesper.testing.queues_contract",
    "vesper.testing.races_contract",
    "vesper.testing.schedules_contract",
    "vesper.testing.results_contract",
    "vesper.testing.retention_contract",
    "vesper.testing.submit_contract",
    "vesper.testing.summary_contract",
    "vesper.testing.transactions_contract",
    "vesper.testing.unique_contract",
    "vesper.testing.workers_contract",
)

from vesper.testing.batch_contract import CompleteAndClaimContract, RecordAndClaimContract
from vesper.testing.bulk_contract import BulkContract
from vesper.testing.cancel_request_contract import CancelRequestContract, SnoozeContract
from vesper.testing.claims_contract import ClaimContract
from vesper.testing.dashboard_contract import ActivityContract, SearchContract
from vesper.testing.expiry_contract import ExpireContract
from vesper.testing.fixtures import StoreFactory, StoreFixtures, StoreOpener, StoreOutage
from vesper.testing.freedoms import FreeJobs, FreeStore
from vesper.testing.leases_contract import (
    CompleteContract,
    FailContract,
    ReleaseContract,
    RenewContract,
)
from vesper.testing.management_contract import (
    CancelContract,
    FindContract,
    RetryContract,
    StatsContract,
)
from vesper.testing.model import ModelContract, StoreModel
from vesper.testing.outage_contract import OutageContract
from vesper.testing.queue_races_contract import QueueRaceContract
from vesper.testing.queues_contract import (
    QueueClaimContract,
    QueueLimitContract,
    QueuePauseContract,
    QueueSettingsContract,
)
from vesper.testing.races_contract import RaceContract
from vesper.testing.results_contract import GetManyContract, ResultsContract
from vesper.testing.retention_contract import DeleteContract, PruneContract, PruneModelContract
from vesper.testing.schedules_contract import ScheduleRegistryContract
from vesper.testing.scratch import scratch_database
from vesper.testing.submit_contract import SubmitContract
from vesper.testing.summary_contract import SummaryContract
from vesper.testing.transactions_contract import CallerTransactions, TransactionalSubmitContract
from vesper.testing.unique_contract import UniqueKeyContract, UniqueRetryContract
from vesper.testing.workers_contract import WorkerRegistryContract


class JobRepositoryContract(
    SubmitContract,
    ClaimContract,
    CompleteContract,
    CompleteAndClaimContract,
    RecordAndClaimContract,
    FailContract,
    RenewContract,
    ReleaseContract,
    ExpireContract,
    FindContract,
    StatsContract,
    CancelContract,
    RetryContract,
    RaceContract,
    QueueClaimContract,
    QueuePauseContract,
    QueueSettingsContract,
    QueueLimitContract,
    QueueRaceContract,
    ModelContract,
    CancelRequestContract,
    SnoozeContract,
    BulkContract,
    UniqueKeyContract,
    UniqueRetryContract,
    ResultsContract,
    GetManyContract,
    PruneContract,
    PruneModelContract,
    DeleteContract,
    TransactionalSubmitContract,
    SearchContract,
    ActivityContract,
    SummaryContract,
):
    """Every guarantee of the JobRepository port, grouped by port method."""


class StoreContract(
    JobRepositoryContract, WorkerRegistryContract, OutageContract, ScheduleRegistryContract
):
    """The whole Store: its JobRepository, its WorkerRegistry, its errors when the
    database goes away, and its optional ScheduleRegistry."""


__all__ = [
    "ActivityContract",
    "BulkContract",
    "CallerTransactions",
    "CancelContract",
    "CancelRequestContract",
    "ClaimContract",
    "CompleteAndClaimContract",
    "CompleteContract",
    "DeleteContract",
    "ExpireContract",
    "FailContract",
    "FindContract",
    "FreeJobs",
    "FreeStore",
    "GetManyContract",
    "JobRepositoryContract",
    "ModelContract",
    "OutageContract",
    "PruneContract",
    "PruneModelContract",
    "QueueClaimContract",
    "QueueLimitContract",
    "QueuePauseContract",
    "QueueRaceContract",
    "QueueSettingsContract",
    "RaceContract",
    "RecordAndClaimContract",
    "ReleaseContract",
    "RenewContract",
    "ResultsContract",
    "RetryContract",
    "ScheduleRegistryContract",
    "SearchContract",
    "SnoozeContract",
    "StatsContract",
    "StoreContract",
    "StoreFactory",
    "StoreFixtures",
    "StoreModel",
    "StoreOpener",
    "StoreOutage",
    "SubmitContract",
    "SummaryContract",
    "TransactionalSubmitContract",
    "UniqueKeyContract",
    "UniqueRetryContract",
    "WorkerRegistryContract",
    "scratch_database",
]

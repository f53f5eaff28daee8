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
    store = my_adapter.open(url, clock=SystemClock())
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
`vesper.testing.postgres` helps with a scratch PostgreSQL database. This package needs
pytest and hypothesis (vesper's `dev` extra).
"""

# ruff: noqa: E402  (the contract modules load after register_assert_rewrite, on purpose)
from __future__ import annotations

import pytest

# Before the submodules load: pytest then shows the operands of a failing assert there.
pytest.register_assert_rewrite(
    "vesper.testing.batch_contract",
    "vesper.testing.claims_contract",
    "vesper.testing.expiry_contract",
    "vesper.testing.fixtures",
    "vesper.testing.freedoms",
    "vesper.testing.leases_contract",
    "vesper.testing.management_contract",
    "vesper.testing.model",
    "vesper.testing.model_parts",
    "vesper.testing.postgres",
    "vesper.testing.queue_races_contract",
    "vesper.testing.queues_contract",
    "vesper.testing.races_contract",
    "vesper.testing.submit_contract",
    "vesper.testing.workers_contract",
)

from vesper.testing.batch_contract import CompleteAndClaimContract, RecordAndClaimContract
from vesper.testing.claims_contract import ClaimContract
from vesper.testing.expiry_contract import ExpireContract
from vesper.testing.fixtures import StoreFactory, StoreFixtures, StoreOpener
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
from vesper.testing.queue_races_contract import QueueRaceContract
from vesper.testing.queues_contract import (
    QueueClaimContract,
    QueueLimitContract,
    QueuePauseContract,
    QueueSettingsContract,
)
from vesper.testing.races_contract import RaceContract
from vesper.testing.submit_contract import SubmitContract
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
):
    """Every guarantee of the JobRepository port, grouped by port method."""


class StoreContract(JobRepositoryContract, WorkerRegistryContract):
    """The whole Store: its JobRepository and its WorkerRegistry."""


__all__ = [
    "CancelContract",
    "ClaimContract",
    "CompleteAndClaimContract",
    "CompleteContract",
    "ExpireContract",
    "FailContract",
    "FindContract",
    "FreeJobs",
    "FreeStore",
    "JobRepositoryContract",
    "ModelContract",
    "QueueClaimContract",
    "QueueLimitContract",
    "QueuePauseContract",
    "QueueRaceContract",
    "QueueSettingsContract",
    "RaceContract",
    "RecordAndClaimContract",
    "ReleaseContract",
    "RenewContract",
    "RetryContract",
    "StatsContract",
    "StoreContract",
    "StoreFactory",
    "StoreFixtures",
    "StoreModel",
    "StoreOpener",
    "SubmitContract",
    "WorkerRegistryContract",
]

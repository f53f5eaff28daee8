"""The contract suite against the in-memory store, built as production builds it, and
against it taking the freedoms the port leaves a store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext

import pytest

from vesper.adapters.memory import InMemoryStore
from vesper.application.ports import JobRepository, Store
from vesper.entrypoints.container import build_container
from vesper.testing import FreeStore, StoreContract, StoreFactory, StoreOpener


class TestInMemoryStore(StoreContract):
    @pytest.fixture
    def store_factory(self) -> Iterator[StoreFactory]:
        with ExitStack() as containers:

            def fresh() -> StoreOpener:
                container = build_container({"VESPER_STORAGE": "memory"})
                containers.callback(container.shutdown_resources)
                store = container.store()

                def same_store() -> AbstractContextManager[Store]:
                    return nullcontext(store)  # one process: every handle is the same store

                return same_store

            yield fresh


class TestAStoreTakingThePortsFreedoms(StoreContract):
    """A lease token per claimed job (the stores above share one per claim), the fenced
    updates' and expire's results in reverse order, and no complete_and_claim."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        def fresh() -> StoreOpener:
            store = FreeStore(InMemoryStore(), per_job_tokens=True, reordered=True)
            return lambda: nullcontext(store)

        return fresh


class _Coalesced:
    """The in-memory store as the use cases see it: its repository inside the process's
    group commit (CoalescingJobRepository), which must keep every rule of the port."""

    def __init__(self, store: Store, jobs: JobRepository) -> None:
        self.jobs = jobs
        self.workers = store.workers

    def close(self) -> None:
        """The container closes the store."""


class TestInMemoryStoreThroughTheGroupCommit(StoreContract):
    @pytest.fixture
    def store_factory(self) -> Iterator[StoreFactory]:
        with ExitStack() as containers:

            def fresh() -> StoreOpener:
                container = build_container({"VESPER_STORAGE": "memory"})
                containers.callback(container.shutdown_resources)
                store: Store = _Coalesced(container.store(), container.jobs())

                def same_store() -> AbstractContextManager[Store]:
                    return nullcontext(store)

                return same_store

            yield fresh

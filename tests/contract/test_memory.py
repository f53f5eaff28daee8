"""The contract suite against the in-memory store, built as production builds it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext

import pytest

from vesper.application.ports import Store
from vesper.entrypoints.container import build_container
from vesper.testing import StoreContract, StoreFactory, StoreOpener


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

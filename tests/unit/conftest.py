"""Fixtures for the use-case tests: the in-memory store on a clock that moves when told."""

from __future__ import annotations

import pytest

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository, InMemoryWorkerRegistry

from .builders import T0


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def repo(clock: FixedClock) -> InMemoryJobRepository:
    return InMemoryJobRepository(clock)


@pytest.fixture
def registry(clock: FixedClock) -> InMemoryWorkerRegistry:
    return InMemoryWorkerRegistry(clock)

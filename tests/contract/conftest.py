"""Marks for the contract suite's expensive tests (vesper.testing itself uses no markers,
so that adapter authors need not register ours)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
SLOW = {
    "test_claim_concurrent_processes_never_share_a_job",  # spawns 4 processes
    "test_model_random_operations_match_reference_store",  # 50 random runs of 30 steps
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.name in SLOW:
            item.add_marker(pytest.mark.slow)

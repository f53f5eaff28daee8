"""PostgreSQL: VESPER_DB_POOL_SIZE and VESPER_DB_MAX_OVERFLOW size the store's main pool;
heartbeats keep their own pool whatever these are."""

from __future__ import annotations

import pytest

from vesper.adapters.sql import BEAT_MAX_OVERFLOW, BEAT_POOL_SIZE
from vesper.application.ports import store_pools
from vesper.entrypoints.app import App

pytestmark = pytest.mark.postgres


def _pools(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    app = App(env)
    try:
        pools = store_pools(app.container.store())
        return {name: (pool.size, pool.max_overflow) for name, pool in pools.items()}
    finally:
        app.close()


def test_the_pool_variables_size_the_main_pool_only(postgres_database: str) -> None:
    env = {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": postgres_database}
    sized = _pools({**env, "VESPER_DB_POOL_SIZE": "3", "VESPER_DB_MAX_OVERFLOW": "0"})
    assert sized == {"main": (3, 0), "beat": (BEAT_POOL_SIZE, BEAT_MAX_OVERFLOW)}
    assert _pools(env)["main"] == (10, 5)  # the defaults, as before the variables existed

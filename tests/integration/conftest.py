"""Stores for end-to-end tests: a fresh SQLite file, or a scratch PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vesper.entrypoints.app import App
from vesper.testing import postgres as pg


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin, prefix="vesper_it_") as url:
        migrating = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
        migrating.container.store()  # opening the store applies the migrations
        migrating.close()
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment that points vesper processes at one empty store."""
    if request.param == "sqlite":
        return {"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    url: str = request.getfixturevalue("postgres_database")
    pg.truncate(url)
    return {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url}


@pytest.fixture
def queue_app(store_env: dict[str, str]) -> Iterator[App]:
    """An App on that store, for the test to enqueue and inspect."""
    app = App(store_env)
    yield app
    app.close()

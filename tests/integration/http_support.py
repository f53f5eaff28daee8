"""Fixtures and helpers of the HTTP route tests: an app on every store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http import create_app
from vesper.testing import postgres as pg


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    env = {"VESPER_STORAGE": request.param}
    if request.param == "sqlite":
        env["VESPER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'api.db'}"
    elif request.param == "postgres":
        url: str = request.getfixturevalue("postgres_database")  # tests/integration/conftest
        pg.truncate(url)
        env["VESPER_DATABASE_URL"] = url
    c = build_container(env)
    yield c
    c.shutdown_resources()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


def rows(container: Container) -> int:
    return container.get_stats()().total


def error_body(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"]
    return body


def submit(client: TestClient[Litestar], **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"type": "t", **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job

"""The app as a whole: the error shape of unknown paths and methods, OPTIONS, string
annotations, building from settings, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http import create_app
from vesper.entrypoints.http.routes.jobs import submit_job_route
from vesper.entrypoints.settings import Settings


@pytest.fixture
def container() -> Iterator[Container]:
    c = build_container({"VESPER_STORAGE": "memory"})
    yield c
    c.shutdown_resources()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"]
    return body


def test_unknown_path_and_method_use_the_error_shape(client: TestClient[Litestar]) -> None:
    _error(client.get("/nope"), 404)
    _error(client.get("/schema/nope"), 404)
    response = client.delete("/jobs")
    body = _error(response, 405)
    assert "GET" in response.headers["allow"]
    assert "POST" in response.headers["allow"]
    assert "GET" in body["detail"]["allowed"]
    allowed = client.put("/health").headers["allow"].split(", ")
    assert sorted(allowed) == ["GET", "HEAD", "OPTIONS"]


def test_options_lists_every_method_of_the_path(client: TestClient[Litestar]) -> None:
    assert client.options("/jobs").headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/jobs/batch").headers["allow"] == "OPTIONS, POST"
    assert client.options(f"/jobs/{uuid4()}").headers["allow"] == "DELETE, GET, OPTIONS"
    assert client.options("/health").headers["allow"] == "GET, HEAD, OPTIONS"
    # a typed path parameter, two handlers on the path
    assert client.options("/schedules/tick").headers["allow"] == "DELETE, OPTIONS, PATCH"


def test_handler_annotations_are_strings_resolved_by_litestar() -> None:
    # from __future__ import annotations: Litestar resolves the names at startup.
    assert isinstance(submit_job_route.fn.__annotations__["data"], str)
    assert create_app(build_container({"VESPER_STORAGE": "memory"})).route_handler_method_map


def test_create_app_from_settings_alone() -> None:
    settings = Settings.from_env({"VESPER_STORAGE": "memory", "VESPER_MAX_BODY": "2KiB"})
    with TestClient(create_app(settings=settings)) as client:
        assert client.post("/jobs", json={"type": "a"}).status_code == 201
        too_big = client.post("/jobs", json={"type": "a", "payload": {"x": "y" * 4096}})
        assert too_big.status_code == 413
        assert too_big.json()["detail"] == {"max_bytes": 2048}


def test_openapi_document_describes_every_route(client: TestClient[Litestar]) -> None:
    root = client.get("/schema")
    document = client.get("/schema/openapi.json")
    assert root.status_code == document.status_code == 200
    assert root.json() == document.json()
    spec = document.json()
    assert set(spec["paths"]) == {
        "/jobs",
        "/jobs/batch",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/jobs/retry",
        "/jobs/cancel",
        "/workers",
        "/stats",
        "/schedules",
        "/schedules/{name}",
        "/queues",
        "/queues/{name}",
        "/health",
        "/ready",
    }
    schemas = spec["components"]["schemas"]
    for name in (
        "SubmitJobIn",
        "BatchJobIn",
        "SubmitBatchIn",
        "BulkRetryIn",
        "BulkCancelIn",
        "SchedulePatchIn",
    ):
        assert schemas[name]["additionalProperties"] is False
    # a bulk action's statuses are those it starts from
    for name, statuses in (
        ("BulkRetryIn", ["cancelled", "dlq", "failed"]),
        ("BulkCancelIn", ["failed", "pending"]),
    ):
        assert schemas[name]["properties"]["status"]["oneOf"][0]["enum"] == statuses
    assert set(schemas["SubmitJobIn"]["properties"]) == {
        "type",
        "priority",
        "payload",
        "max_retries",
        "run_at",
        "delay_seconds",
        "timeout_seconds",
        "unique_key",
        "queue",
        "concurrency_key",
    }
    post_jobs = spec["paths"]["/jobs"]["post"]
    assert post_jobs["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitJobIn"
    }
    assert post_jobs["description"].startswith("Submit a job.")
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    content = response["content"]["application/json"]["schema"]
                    assert content == error_ref, (method, path, code)
    assert "securitySchemes" not in spec["components"]

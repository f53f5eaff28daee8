"""The HTTP API's routes on the in-memory store: happy paths, idempotency, batches,
pagination, transitions, fleet and stats, and the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import Failure, JobId, LeaseRef
from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http import create_app
from vesper.entrypoints.http.routes.jobs import submit_job_route
from vesper.entrypoints.http.schemas import FleetOut, JobOut, JobPageOut, StatsOut
from vesper.entrypoints.settings import Settings
from vesper.entrypoints.wire import job_to_wire
from vesper.testing import postgres as pg

# The four examples of the original service's README, byte for byte as curl sends them.
README_EXAMPLES = [
    b"""{
    "type": "cleanup_temp_files",
    "priority": 0,
    "payload": {"directory": "/tmp"}
  }""",
    b"""{
    "type": "resize_image",
    "priority": 3,
    "payload": {"image_url": "cat.png", "width": 640}
  }""",
    b"""{
    "type": "send_welcome_email",
    "priority": 7,
    "payload": {"user_id": 123, "email": "user@example.com"}
  }""",
    b"""{
    "type": "fraud_alert",
    "priority": 10,
    "payload": {"transaction_id": "tx_456", "risk_score": 0.95}
  }""",
]
JSON = {"Content-Type": "application/json"}


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


def _rows(container: Container) -> int:
    return container.get_stats()().total


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"]
    return body


def _submit(client: TestClient[Litestar], **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"type": "t", **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def _register(container: Container, worker_id: str, machine: str, concurrency: int) -> None:
    now = datetime.now(UTC)
    process = WorkerProcess(
        id=worker_id,
        machine=machine,
        pid=1000,
        concurrency=concurrency,
        started_at=now,
        last_heartbeat=now,
    )
    container.register_worker()(process)


# --- submitting -------------------------------------------------------------------


def test_readme_curl_examples_are_accepted_and_readable(client: TestClient[Litestar]) -> None:
    created = []
    for body in README_EXAMPLES:
        response = client.post("/jobs", content=body, headers=JSON)
        assert response.status_code == 201, response.text
        created.append(response.json())
    for job, body in zip(created, README_EXAMPLES, strict=True):
        sent = msgspec.json.decode(body)
        fetched = client.get(f"/jobs/{job['job_id']}")
        assert fetched.status_code == 200
        data = fetched.json()
        assert data == job
        assert (data["type"], data["priority"], data["payload"]) == (
            sent["type"],
            sent["priority"],
            sent["payload"],
        )
        assert (data["status"], data["retries"], data["error"]) == ("pending", 0, "")
        for name in ("job_id", "created_at", "updated_at"):
            assert data[name]


def test_submit_defaults_priority_and_payload(client: TestClient[Litestar]) -> None:
    job = _submit(client)
    assert (job["priority"], job["payload"], job["max_retries"], job["status"]) == (
        0,
        {},
        3,
        "pending",
    )


def test_submit_accepts_every_optional_field(client: TestClient[Litestar]) -> None:
    payload = {"n": [1, 2.5, None, True, "x", {"deep": {}}]}
    job = _submit(
        client,
        priority=5,
        payload=payload,
        max_retries=0,
        run_at="2999-01-01T10:00:00+02:00",
        timeout_seconds=2.5,
    )
    assert job["run_at"] == "2999-01-01T08:00:00Z"
    assert (job["max_retries"], job["timeout_seconds"], job["payload"]) == (0, 2.5, payload)
    delayed = _submit(client, delay_seconds=60)
    assert delayed["run_at"] > delayed["created_at"]


def test_submit_without_content_type_is_read_as_json(client: TestClient[Litestar]) -> None:
    response = client.post("/jobs", content=b'{"type": "a"}')
    assert response.status_code == 201


def test_job_body_is_the_shared_wire_shape(
    client: TestClient[Litestar], container: Container
) -> None:
    job_id = _submit(client, payload={"k": "v"})["job_id"]
    body = client.get(f"/jobs/{job_id}").json()
    assert set(body) == set(JobOut.__struct_fields__)
    assert body == job_to_wire(container.get_job()(JobId(UUID(job_id))))


def test_deepest_accepted_body_round_trips(client: TestClient[Litestar]) -> None:
    # 128 levels in all: the body, the payload, then 126 nested lists.
    nested = b"[" * 126 + b"]" * 126
    body = b'{"type": "deep", "payload": {"x": ' + nested + b"}}"
    created = client.post("/jobs", content=body, headers=JSON)
    assert created.status_code == 201, created.text
    fetched = client.get(f"/jobs/{created.json()['job_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["payload"] == msgspec.json.decode(body)["payload"]
    assert client.get("/jobs").status_code == 200
    deeper = b'{"type": "deep", "payload": {"x": [' + nested + b"]}}"
    refused = _error(client.post("/jobs", content=deeper, headers=JSON), 400)
    assert refused["detail"]["field"] == "body"


def test_get_unknown_job_is_404(client: TestClient[Litestar]) -> None:
    missing = uuid4()
    body = _error(client.get(f"/jobs/{missing}"), 404)
    assert body["detail"] == {"job_id": str(missing)}


def test_get_malformed_id_is_400_naming_job_id(client: TestClient[Litestar]) -> None:
    for bad in ("abc", "123", "' OR 1=1--", "0" * 40):
        body = _error(client.get(f"/jobs/{bad}"), 400)
        assert body["detail"]["field"] == "job_id"


# --- idempotency ------------------------------------------------------------------


def test_idempotent_replay_returns_the_original_job(
    client: TestClient[Litestar], container: Container
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/jobs", json={"type": "charge", "payload": {"n": 1}}, headers=headers)
    again = client.post("/jobs", json={"type": "charge", "payload": {"n": 1}}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert first.json()["idempotency_key"] == "order-42"
    assert _rows(container) == 1


def test_idempotency_key_with_another_body_is_422(
    client: TestClient[Litestar], container: Container
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert client.post("/jobs", json={"type": "a"}, headers=headers).status_code == 201
    body = _error(client.post("/jobs", json={"type": "b"}, headers=headers), 422)
    assert body["detail"]["field"] == "Idempotency-Key"
    assert _rows(container) == 1


def test_key_stays_bound_after_the_job_is_cancelled(client: TestClient[Litestar]) -> None:
    headers = {"Idempotency-Key": "bound"}
    job = client.post("/jobs", json={"type": "a"}, headers=headers).json()
    assert client.post(f"/jobs/{job['job_id']}/cancel").status_code == 200
    again = client.post("/jobs", json={"type": "a"}, headers=headers)
    assert again.status_code == 200
    assert again.json()["job_id"] == job["job_id"]


def test_concurrent_posts_with_one_key_create_one_job(container: Container) -> None:
    async def burst() -> list[Any]:
        async with AsyncTestClient(create_app(container)) as client:
            headers = {"Idempotency-Key": "same-key"}
            return list(
                await asyncio.gather(
                    *(
                        client.post("/jobs", json={"type": "x", "priority": 4}, headers=headers)
                        for _ in range(20)
                    )
                )
            )

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [201]
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert _rows(container) == 1


# --- batches ----------------------------------------------------------------------


def test_batch_inserts_all_jobs_in_order(client: TestClient[Litestar]) -> None:
    jobs = [{"type": "b", "priority": p, "payload": {"i": p}} for p in range(5)]
    response = client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 201
    returned = response.json()["jobs"]
    assert [j["payload"]["i"] for j in returned] == list(range(5))
    for job in returned:
        assert client.get(f"/jobs/{job['job_id']}").json() == job


def test_batch_with_a_bad_item_inserts_nothing_and_names_it(
    client: TestClient[Litestar], container: Container
) -> None:
    jobs: list[dict[str, Any]] = [{"type": "ok"} for _ in range(6)]
    jobs[3] = {"type": "bad", "priority": 11}
    body = _error(client.post("/jobs/batch", json={"jobs": jobs}), 400)
    assert body["detail"]["field"] == "jobs[3].priority"
    jobs[3] = {"type": "bad", "priorty": 1}
    body = _error(client.post("/jobs/batch", json={"jobs": jobs}), 400)
    assert body["detail"]["field"] == "jobs[3].priorty"
    jobs[3] = {"type": "bad", "timeout_seconds": 0}
    body = _error(client.post("/jobs/batch", json={"jobs": jobs}), 400)
    assert body["detail"]["field"] == "jobs[3].timeout_seconds"
    assert _rows(container) == 0


def test_batch_idempotency_keys_are_per_job(
    client: TestClient[Litestar], container: Container
) -> None:
    jobs = [{"type": "a", "idempotency_key": "k1"}, {"type": "b", "idempotency_key": "k2"}]
    first = client.post("/jobs/batch", json={"jobs": jobs})
    again = client.post("/jobs/batch", json={"jobs": jobs})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    conflict = client.post("/jobs/batch", json={"jobs": [{"type": "c", "idempotency_key": "k1"}]})
    _error(conflict, 422)
    assert _rows(container) == 2


def test_batch_refuses_an_idempotency_key_header(
    client: TestClient[Litestar], container: Container
) -> None:
    response = client.post(
        "/jobs/batch", json={"jobs": [{"type": "a"}]}, headers={"Idempotency-Key": "k"}
    )
    assert _error(response, 400)["detail"]["field"] == "Idempotency-Key"
    assert _rows(container) == 0


def test_batch_above_the_limit_is_422(client: TestClient[Litestar], container: Container) -> None:
    body = _error(client.post("/jobs/batch", json={"jobs": [{"type": "a"}] * 1001}), 422)
    assert body["detail"] == {"field": "jobs", "max_items": 1000}
    assert client.post("/jobs/batch", json={"jobs": [{"type": "a"}] * 1000}).status_code == 201
    assert _rows(container) == 1000


def test_empty_batch_is_400(client: TestClient[Litestar]) -> None:
    assert _error(client.post("/jobs/batch", json={"jobs": []}), 400)["detail"]["field"] == "jobs"


# --- listing ----------------------------------------------------------------------


def test_pagination_returns_every_job_exactly_once(client: TestClient[Litestar]) -> None:
    submitted = {_submit(client, payload={"i": i})["job_id"] for i in range(25)}
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", params=params)
        assert page.status_code == 200
        body = msgspec.convert(page.json(), JobPageOut)
        seen.extend(job.job_id for job in body.jobs)
        pages += 1
        cursor = body.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == submitted


def test_list_filters_by_status_type_and_priority(client: TestClient[Litestar]) -> None:
    a = _submit(client, type="alpha", priority=1)
    b = _submit(client, type="beta", priority=9)
    client.post(f"/jobs/{b['job_id']}/cancel")

    def ids(**params: Any) -> list[str]:
        response = client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    assert ids(type="alpha") == [a["job_id"]]
    assert ids(priority=9) == [b["job_id"]]
    assert ids(status="cancelled") == [b["job_id"]]
    assert ids(status="pending", type="beta") == []
    assert ids() == [b["job_id"], a["job_id"]]  # newest first


def test_list_rejects_bad_parameters_naming_them(client: TestClient[Litestar]) -> None:
    cases = {
        "status": "nope",
        "limit": "0",
        "priority": "11",
        "cursor": "not-a-cursor",
        "type": "",
    }
    for name, value in cases.items():
        body = _error(client.get("/jobs", params={name: value}), 400)
        assert body["detail"]["field"] == name, (name, body)
    assert _error(client.get("/jobs", params={"limit": "abc"}), 400)["detail"]["field"] == "limit"


# --- transitions ------------------------------------------------------------------


def test_cancel_then_retry_then_409s(client: TestClient[Litestar]) -> None:
    job_id = _submit(client)["job_id"]
    retry_pending = _error(client.post(f"/jobs/{job_id}/retry"), 409)
    assert retry_pending["detail"] == {"job_id": job_id, "status": "pending", "action": "retry"}
    cancelled = client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    _error(client.post(f"/jobs/{job_id}/cancel"), 409)
    retried = client.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending"
    _error(client.post(f"/jobs/{job_id}/retry"), 409)


def test_cancel_and_retry_of_unknown_jobs_are_404(client: TestClient[Litestar]) -> None:
    for action in ("cancel", "retry"):
        _error(client.post(f"/jobs/{uuid4()}/{action}"), 404)
        _error(client.post(f"/jobs/nope/{action}"), 400)


def test_retry_moves_a_dlq_job_back_to_pending_once(
    client: TestClient[Litestar], container: Container
) -> None:
    job_id = _submit(client, max_retries=0)["job_id"]
    repository = container.job_repository()
    (claimed,) = repository.claim(worker_id="w", limit=1, lease=timedelta(seconds=30))
    assert claimed.lease is not None
    ref = LeaseRef(job_id=claimed.id, token=claimed.lease.token)
    repository.fail([Failure(lease=ref, error="boom", retry_delay=None)])
    assert client.get(f"/jobs/{job_id}").json()["status"] == "dlq"
    assert client.post(f"/jobs/{job_id}/retry").json()["status"] == "pending"
    _error(client.post(f"/jobs/{job_id}/retry"), 409)


# --- fleet, stats, probes ---------------------------------------------------------


def test_workers_reports_totals_and_machines(
    client: TestClient[Litestar], container: Container
) -> None:
    empty = client.get("/workers").json()
    assert (empty["total_workers"], empty["machines"], empty["workers"]) == (0, [], [])
    _register(container, "w-a1", "machine-a", 10)
    _register(container, "w-a2", "machine-a", 15)
    _register(container, "w-b1", "machine-b", 5)
    body = client.get("/workers").json()
    msgspec.convert(body, FleetOut)
    assert body["total_workers"] == 30
    assert body["machines"] == [
        {"machine": "machine-a", "processes": 2, "workers": 25},
        {"machine": "machine-b", "processes": 1, "workers": 5},
    ]
    assert {w["worker_id"] for w in body["workers"]} == {"w-a1", "w-a2", "w-b1"}


def test_stats_counts_by_status_and_priority(client: TestClient[Litestar]) -> None:
    for priority in (0, 3, 3, 10):
        _submit(client, priority=priority)
    body = client.get("/stats").json()
    msgspec.convert(body, StatsOut)
    assert body["total"] == 4
    assert body["by_status"]["pending"] == 4
    assert body["by_priority"] == {"0": 1, "3": 2, "10": 1}


def test_health_and_ready(client: TestClient[Litestar]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


# --- the app ----------------------------------------------------------------------


def test_unknown_path_and_method_use_the_error_shape(client: TestClient[Litestar]) -> None:
    _error(client.get("/nope"), 404)
    _error(client.get("/schema/nope"), 404)
    response = client.delete("/jobs")
    body = _error(response, 405)
    assert "GET" in response.headers["allow"]
    assert "POST" in response.headers["allow"]
    assert "GET" in body["detail"]["allowed"]
    assert client.put("/health").headers["allow"] == "GET, OPTIONS"


def test_options_lists_every_method_of_the_path(client: TestClient[Litestar]) -> None:
    assert client.options("/jobs").headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/jobs/batch").headers["allow"] == "OPTIONS, POST"
    assert client.options(f"/jobs/{uuid4()}").headers["allow"] == "GET, OPTIONS"
    assert client.options("/health").headers["allow"] == "GET, OPTIONS"


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
        "/workers",
        "/stats",
        "/health",
        "/ready",
    }
    schemas = spec["components"]["schemas"]
    for name in ("SubmitJobIn", "BatchJobIn", "SubmitBatchIn"):
        assert schemas[name]["additionalProperties"] is False
    assert set(schemas["SubmitJobIn"]["properties"]) == {
        "type",
        "priority",
        "payload",
        "max_retries",
        "run_at",
        "delay_seconds",
        "timeout_seconds",
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

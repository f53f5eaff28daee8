"""Submitting over HTTP on every store (memory, SQLite, PostgreSQL): the original
README's examples, optional fields, idempotency (with a 20-request race), batches."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient, TestClient

from tests.integration.http_support import client, container  # noqa: F401 (fixtures)
from tests.integration.http_support import error_body as _error
from tests.integration.http_support import rows as _rows
from tests.integration.http_support import submit as _submit
from vesper.domain.job import JobId
from vesper.entrypoints.container import Container
from vesper.entrypoints.http import create_app
from vesper.entrypoints.http.schemas import JobOut
from vesper.entrypoints.wire import job_to_wire

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

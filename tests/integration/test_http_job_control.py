"""The HTTP side of job control: cancel of a running job (202), bulk retry and cancel,
unique keys; on every store."""

from __future__ import annotations

from datetime import timedelta

from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.http_support import client, container, error_body  # noqa: F401 (fixtures)
from tests.integration.http_support import submit as _submit
from vesper.domain.job import Failure, LeaseRef
from vesper.entrypoints.container import Container

JSON = {"Content-Type": "application/json"}


def claim_all(store: Container) -> list[LeaseRef]:
    jobs = store.job_repository()
    claimed = jobs.claim(worker_id="w1", limit=100, lease=timedelta(seconds=30))
    return [LeaseRef(job_id=j.id, token=j.lease.token) for j in claimed if j.lease]


def test_cancel_of_a_running_job_is_accepted_with_202(
    client: TestClient[Litestar], container: Container
) -> None:
    job = _submit(client, type="long")
    [lease] = claim_all(container)
    response = client.post(f"/jobs/{job['job_id']}/cancel")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["cancel_requested_at"] is not None) == ("processing", True)
    # the worker's next renewal ends it cancelled
    jobs = container.job_repository()
    [ended] = jobs.renew([lease], lease=timedelta(seconds=30))
    assert ended.status.value == "cancelled"
    assert client.get(f"/jobs/{job['job_id']}").json()["status"] == "cancelled"
    # a pending job is still cancelled at once, with 200
    pending = _submit(client, type="short")
    assert client.post(f"/jobs/{pending['job_id']}/cancel").status_code == 200


def test_bulk_retry_and_cancel_count_what_they_changed(
    client: TestClient[Litestar], container: Container
) -> None:
    for _ in range(3):
        _submit(client, type="t1", max_retries=0)
    _submit(client, type="t2", max_retries=0)
    jobs = container.job_repository()
    leases = claim_all(container)
    jobs.fail([Failure(lease=ref, error="boom", retry_delay=None) for ref in leases])
    response = client.post("/jobs/retry", json={"status": "dlq", "type": "t1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 3, "skipped": 0}
    assert client.post("/jobs/retry", json={"status": "dlq"}).json() == {"count": 1, "skipped": 0}
    cancelled = client.post("/jobs/cancel", json={"type": "t1", "priority": 0}).json()
    assert cancelled == {"count": 3, "skipped": 0}
    listed = client.get("/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert {j["type"] for j in listed} == {"t1"}
    assert client.post("/jobs/cancel", json={}).json() == {"count": 1, "skipped": 0}


def test_bulk_refuses_a_filter_it_cannot_take(client: TestClient[Litestar]) -> None:
    body = error_body(client.post("/jobs/retry", json={"status": "done"}), 400)
    assert "status" in body["error"]
    body = error_body(client.post("/jobs/cancel", json={"statuz": "dlq"}), 400)
    assert "statuz" in body["error"]
    body = error_body(client.post("/jobs/retry", json={"queue": "no spaces"}), 400)
    assert "queue" in body["error"]


def test_bulk_filters_by_queue(client: TestClient[Litestar]) -> None:
    for queue in ("emails", "emails", "default"):
        assert client.post("/jobs", json={"type": "t", "queue": queue}).status_code == 201
    assert client.post("/jobs/cancel", json={"queue": "emails"}).json() == {
        "count": 2,
        "skipped": 0,
    }
    pending = client.get("/jobs", params={"status": "pending"}).json()["jobs"]
    assert [j["queue"] for j in pending] == ["default"]


def test_a_unique_key_returns_the_active_job(client: TestClient[Litestar]) -> None:
    first = client.post("/jobs", json={"type": "sync", "unique_key": "user:42"})
    assert first.status_code == 201
    again = client.post("/jobs", json={"type": "sync", "unique_key": "user:42"})
    assert again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["unique_key"] == "user:42"
    client.post(f"/jobs/{first.json()['job_id']}/cancel")
    third = client.post("/jobs", json={"type": "sync", "unique_key": "user:42"})
    assert third.status_code == 201
    assert third.json()["job_id"] != first.json()["job_id"]


def test_a_retry_never_makes_a_second_active_job_with_one_key(
    client: TestClient[Litestar], container: Container
) -> None:
    first = client.post("/jobs", json={"type": "sync", "unique_key": "user:7"}).json()
    assert client.post(f"/jobs/{first['job_id']}/cancel").status_code == 200
    second = client.post("/jobs", json={"type": "sync", "unique_key": "user:7"}).json()
    assert second["job_id"] != first["job_id"]  # the key was free: a new job holds it
    body = error_body(client.post(f"/jobs/{first['job_id']}/retry"), 409)
    assert second["job_id"] in body["error"]
    assert "user:7" in body["error"]
    assert body["detail"]["held_by"] == second["job_id"]
    assert client.get(f"/jobs/{first['job_id']}").json()["status"] == "cancelled"
    # bulk: the held job is skipped and counted; a free one is retried
    free = client.post("/jobs", json={"type": "sync", "unique_key": "user:8"}).json()
    assert client.post(f"/jobs/{free['job_id']}/cancel").status_code == 200
    done = client.post("/jobs/retry", json={"status": "cancelled"})
    assert done.json() == {"count": 1, "skipped": 1}
    assert client.get(f"/jobs/{free['job_id']}").json()["status"] == "pending"
    assert client.get(f"/jobs/{first['job_id']}").json()["status"] == "cancelled"

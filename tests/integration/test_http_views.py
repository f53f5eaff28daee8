"""Reading and managing jobs over HTTP on every store: pagination and filters, cancel
and retry, the fleet, the counters and the probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import msgspec
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.http_support import client, container  # noqa: F401 (fixtures)
from tests.integration.http_support import error_body as _error
from tests.integration.http_support import submit as _submit
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import Failure, LeaseRef
from vesper.entrypoints.container import Container
from vesper.entrypoints.http.schemas import FleetOut, JobPageOut, StatsOut


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

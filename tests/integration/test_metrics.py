"""GET /metrics tells what happened: after a run of jobs (done, retried, dead-lettered,
cancelled), every counter equals the number of events, read back through the
Prometheus text parser."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

import vesper
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.http.routes.metrics import metrics_route
from vesper.entrypoints.service import build_runner

FAST = {
    "VESPER_STORAGE": "memory",
    "VESPER_LEASE": "5s",
    "VESPER_HEARTBEAT": "100ms",
    "VESPER_POLL_INTERVAL": "50ms",
    "VESPER_RETRY_BASE": "1ms",
    "VESPER_RETRY_CAP": "5ms",
}
TERMINAL = {Status.DONE, Status.DLQ, Status.CANCELLED}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient[Litestar]) -> Samples:
    """Every sample of a /metrics scrape, by name and labels (OTel's scope labels dropped)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope")
            )
            samples[(sample.name, labels)] = sample.value
    return samples


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of `name` over the samples whose labels include `match`."""
    wanted = set(match.items())
    return sum(v for (n, labels), v in samples.items() if n == name and wanted <= labels)


def by_label(samples: Samples, name: str, label: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (n, labels), value in samples.items():
        if n == name:
            counts[dict(labels)[label]] += int(value)
    return +counts  # zero entries dropped


def run_until_settled(app: App, job_ids: list[str]) -> None:
    """Run workers until every job is terminal (retries wait out a few ms of backoff)."""
    get_job = app.container.get_job()
    for _ in range(200):
        asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 30))
        if all(get_job(UUID(i)).status in TERMINAL for i in job_ids):
            return
        threading.Event().wait(0.01)
    raise AssertionError("jobs did not settle")


@pytest.fixture(scope="module")
def finished_run() -> Iterator[tuple[TestClient[Litestar], dict[str, list[str]]]]:
    """Submit over HTTP: 5 ok jobs (priorities 0-4), 2 that always fail (max_retries=1:
    one retry, then dlq), 1 NonRetryable (straight to dlq), 1 cancelled; run them all."""
    app = App(FAST)

    @app.consumer("ok")
    def ok(job: vesper.Job) -> None:
        pass

    @app.consumer("flaky")
    def flaky(job: vesper.Job) -> None:
        raise RuntimeError("always fails")

    @app.consumer("fatal")
    def fatal(job: vesper.Job) -> None:
        raise vesper.NonRetryable("never works")

    container = app.container
    http = create_app(container, settings=app.settings, route_handlers=[metrics_route(container)])
    with TestClient(http) as client:
        ids: dict[str, list[str]] = {"ok": [], "flaky": [], "fatal": [], "cancelled": []}

        def submit(kind: str, body: dict[str, Any]) -> str:
            response = client.post("/jobs", json=body)
            assert response.status_code == 201, response.text
            job_id: str = response.json()["job_id"]
            ids[kind].append(job_id)
            return job_id

        for priority in range(5):
            submit("ok", {"type": "ok", "priority": priority})
        for _ in range(2):
            submit("flaky", {"type": "flaky", "max_retries": 1, "priority": 7})
        submit("fatal", {"type": "fatal", "max_retries": 5})
        cancelled = submit("cancelled", {"type": "ok", "delay_seconds": 3600})
        assert client.post(f"/jobs/{cancelled}/cancel").status_code == 200
        run_until_settled(app, [i for kind in ids.values() for i in kind])
        yield client, ids
    app.close()


def test_job_counters_equal_what_happened(
    finished_run: tuple[TestClient[Litestar], dict[str, list[str]]],
) -> None:
    client, _ = finished_run
    s = scrape(client)
    # ok: 5 run + 1 cancelled; flaky: 2 jobs x 2 attempts; fatal: 1 attempt
    assert by_label(s, "vesper_jobs_enqueued_total", "type") == {"ok": 6, "flaky": 2, "fatal": 1}
    assert by_label(s, "vesper_jobs_started_total", "type") == {"ok": 5, "flaky": 4, "fatal": 1}
    assert by_label(s, "vesper_jobs_succeeded_total", "type") == {"ok": 5}
    assert by_label(s, "vesper_jobs_failed_total", "type") == {"flaky": 4, "fatal": 1}
    assert by_label(s, "vesper_jobs_retried_total", "type") == {"flaky": 2}
    assert by_label(s, "vesper_jobs_dead_lettered_total", "type") == {"flaky": 2, "fatal": 1}
    assert by_label(s, "vesper_jobs_cancelled_total", "type") == {"ok": 1}
    assert total(s, "vesper_jobs_abandoned_total") == 0
    # labels carry the priority too
    assert by_label(s, "vesper_jobs_succeeded_total", "priority") == {str(p): 1 for p in range(5)}
    assert by_label(s, "vesper_jobs_dead_lettered_total", "priority") == {"7": 2, "0": 1}
    assert total(s, "vesper_lease_losses_total") == 0
    assert total(s, "vesper_processes_reaped_total") == 0


def test_histograms_count_every_attempt(
    finished_run: tuple[TestClient[Litestar], dict[str, list[str]]],
) -> None:
    client, _ = finished_run
    s = scrape(client)
    assert total(s, "vesper_job_queue_wait_seconds_count") == 10
    assert total(s, "vesper_job_run_time_seconds_count") == 10
    assert total(s, "vesper_job_run_time_seconds_count", outcome="done") == 5
    assert total(s, "vesper_job_run_time_seconds_count", outcome="failed") == 2
    assert total(s, "vesper_job_run_time_seconds_count", outcome="dlq") == 3
    # the +Inf bucket holds every observation
    assert total(s, "vesper_job_run_time_seconds_bucket", le="+Inf") == 10


def test_queue_depth_and_fleet_read_from_the_store(
    finished_run: tuple[TestClient[Litestar], dict[str, list[str]]],
) -> None:
    client, _ = finished_run
    s = scrape(client)
    assert by_label(s, "vesper_queue_depth", "status") == {"done": 5, "dlq": 3, "cancelled": 1}
    assert total(s, "vesper_queue_depth", status="dlq", priority="7") == 2
    assert total(s, "vesper_queue_oldest_due_age_seconds") == 0
    assert total(s, "vesper_worker_processes") == 0  # the runners have deregistered
    assert total(s, "vesper_worker_busy_slots") == 0


def test_http_requests_counted_by_route_and_status(
    finished_run: tuple[TestClient[Litestar], dict[str, list[str]]],
) -> None:
    client, _ids = finished_run
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    s = scrape(client)
    requests = "vesper_http_requests_total"
    assert total(s, requests, method="POST", route="/jobs", status="201") == 9
    assert total(s, requests, method="POST", route="/jobs/{job_id}/cancel", status="200") == 1
    assert total(s, requests, method="GET", route="/jobs/{job_id}", status="404") == 1
    assert total(s, requests, route="unmatched", status="404") == 1
    latency = "vesper_http_request_duration_seconds_count"
    assert total(s, latency, method="POST", route="/jobs", status="201") == 9


def test_busy_slots_while_a_job_runs() -> None:
    app = App(FAST)
    release = threading.Event()
    running = threading.Event()

    @app.consumer("hold")
    def hold(job: vesper.Job) -> None:
        running.set()
        release.wait(10)

    runner = build_runner(app)
    metrics = app.container.metrics()
    app.enqueue("hold")
    thread = threading.Thread(target=lambda: asyncio.run(runner.run(until_idle=True)))
    thread.start()
    try:
        assert running.wait(10)
        body, _ = metrics.exposition(None)
        assert "vesper_worker_busy_slots" in body.decode()
        busy = [
            s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
            if s.name == "vesper_worker_busy_slots"
        ]
        assert busy == [1.0]
    finally:
        release.set()
        thread.join(30)
        app.close()


def test_sql_pool_and_listener_gauges(tmp_path: Any) -> None:
    app = App({"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": f"sqlite:///{tmp_path}/m.db"})
    try:
        metrics = app.container.metrics()

        class Listener:
            connected = threading.Event()
            reconnects = 3

        listener = Listener()
        listener.connected.set()
        metrics.observe_listener(listener.connected.is_set, lambda: listener.reconnects)
        app.enqueue("x")  # opens the store, so its pool has a connection
        body = metrics.exposition(None)[0].decode()
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }
        named = {name: v for (name, _), v in values.items()}
        assert named["vesper_listen_connected"] == 1
        assert named["vesper_listen_reconnects_total"] == 3
        pool = {
            dict(labels).get("state"): v
            for (name, labels), v in values.items()
            if name == "vesper_db_pool_connections"
        }
        assert set(pool) == {"in_use", "idle"}
        assert pool["in_use"] == 0
        assert pool["idle"] >= 1
        assert named["vesper_db_pool_size"] >= 1
    finally:
        app.close()


def test_a_bulk_cancel_counts_each_job_it_cancelled() -> None:
    app = App(FAST)
    container = app.container
    http = create_app(container, settings=app.settings, route_handlers=[metrics_route(container)])
    with TestClient(http) as client:
        for job_type, priority in (("a", 0), ("a", 0), ("a", 3), ("b", 0)):
            body = {"type": job_type, "priority": priority, "delay_seconds": 3600}
            assert client.post("/jobs", json=body).status_code == 201
        done = client.post("/jobs/cancel", json={"type": "a"})
        assert done.json() == {"count": 3, "skipped": 0}
        s = scrape(client)
        assert by_label(s, "vesper_jobs_cancelled_total", "type") == {"a": 3}
        assert total(s, "vesper_jobs_cancelled_total", type="a", priority="0") == 2
        assert total(s, "vesper_jobs_cancelled_total", type="a", priority="3") == 1
        # a bulk retry changes no cancelled count
        assert client.post("/jobs/retry", json={}).json() == {"count": 3, "skipped": 0}
        assert by_label(scrape(client), "vesper_jobs_cancelled_total", "type") == {"a": 3}
    app.close()

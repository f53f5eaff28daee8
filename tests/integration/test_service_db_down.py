"""`vesper serve` and `vesper worker` started while PostgreSQL does not answer (nothing
listens on its port): the API answers at once, the workers wait for the store, and a
SIGTERM meanwhile ends the process cleanly. The recovery without a restart is R6 of the
fault matrix (tests/faults)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import wait_until
from tests.integration.service import Service, free_port

pytestmark = pytest.mark.slow

LEDGER_APP = "tests.integration.apps.ledger:app"


def _down_env(tmp_path: Path) -> dict[str, str]:
    return {
        "VESPER_STORAGE": "postgres",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(free_port()),  # nothing listens there: connection refused
        "DB_USER": "vesper",
        "DB_PASSWORD": "not-shown-anywhere",
        "WORKERS": "2",
        "VESPER_TEST_LEDGER": str(tmp_path / "ledger"),
    }


def _get(service: Service, path: str) -> int:
    try:
        return service.get(path).status_code
    except httpx.HTTPError:
        return 0


def test_serve_answers_health_while_its_workers_wait_for_the_database(tmp_path: Path) -> None:
    service = Service(
        _down_env(tmp_path), tmp_path / "serve.log", command=("serve", "--app", LEDGER_APP)
    )
    try:
        wait_until(
            lambda: _get(service, "/health") == 200,
            timeout=30,
            interval=0.1,
            what="/health while the database is down",
        )
        assert _get(service, "/ready") == 503
        started = time.monotonic()
        response = service.post("/jobs", json={"type": "record"})
        assert time.monotonic() - started <= 2.0
        assert response.status_code == 503
        assert response.headers.get("Retry-After")
        assert set(response.json()) >= {"error", "detail"}
        wait_until(
            lambda: "store not reachable" in service.output(),
            timeout=10,
            what="the workers' retry line",
        )
        assert service.terminate(timeout=15) == 0
        output = service.output()
        assert "not-shown-anywhere" not in output + response.text
        assert "Traceback" not in output
    finally:
        service.stop()


def test_worker_waiting_for_the_database_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    service = Service(
        _down_env(tmp_path),
        tmp_path / "worker.log",
        command=("worker", "--processes", "1", "--app", LEDGER_APP),
    )
    try:
        wait_until(
            lambda: "store not reachable" in service.output(),
            timeout=30,
            what="the worker's retry line",
        )
        service.popen.send_signal(signal.SIGTERM)
        assert service.popen.wait(timeout=10) == 0
        assert "Traceback" not in service.output()
    finally:
        service.stop()

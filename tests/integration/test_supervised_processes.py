"""`vesper worker --processes 2` and `vesper api --processes 2`: real supervisors, real
children, on SQLite and PostgreSQL. A child killed with SIGKILL is replaced (and its
jobs run again elsewhere); SIGTERM to the supervisor stops every child gracefully."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import (
    FAST,
    WorkerProcess,
    children,
    read_ledger,
    starts,
    wait_until,
)
from tests.integration.service import Service
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow


def _two_children(pid: int) -> list[int]:
    found = children(pid)
    return found if len(found) == 2 else []


def _fleet_pids(app: App) -> set[int]:
    return {p.pid for p in app.container.get_fleet()().processes}


def test_worker_processes_2_replace_a_killed_child_and_stop_on_sigterm(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    total = 80
    queue_app.enqueue_many(
        [JobRequest(type="record", payload={"sleep": 0.3}) for _ in range(total)]
    )
    env = {**store_env, **FAST, "WORKERS": "3", "VESPER_TEST_LEDGER": str(ledger)}
    supervisor = WorkerProcess(env, tmp_path / "supervisor.log", processes=2)
    try:
        first = wait_until(
            lambda: _two_children(supervisor.pid), timeout=60, what="two worker processes"
        )
        # one registry entry per child, under the child's own pid
        wait_until(
            lambda: _fleet_pids(queue_app) == set(first), timeout=60, what="two fleet entries"
        )
        victim = first[0]

        def victim_runs_jobs() -> bool:
            mine = [e for e in read_ledger(ledger) if e["pid"] == victim]
            opened = {e["job_id"] for e in mine if e["event"] == "start"}
            return len(opened - {e["job_id"] for e in mine if e["event"] == "end"}) >= 1

        wait_until(victim_runs_jobs, timeout=60, what="the victim to run jobs")
        supervisor_pid = supervisor.pid
        os.kill(victim, signal.SIGKILL)
        mine = [e for e in read_ledger(ledger) if e["pid"] == victim]
        in_flight = {e["job_id"] for e in mine if e["event"] == "start"} - {
            e["job_id"] for e in mine if e["event"] == "end"
        }
        replaced = wait_until(
            lambda: (pids := _two_children(supervisor_pid)) and victim not in pids and pids,
            timeout=30,
            what="the killed child to be replaced",
        )
        wait_until(
            lambda: queue_app.container.get_stats()().by_status[Status.DONE] == total,
            timeout=120,
            what="every job done",
        )
        assert queue_app.container.get_stats()().by_status[Status.PROCESSING] == 0
        runs = starts(read_ledger(ledger))
        for job_id in in_flight:  # the killed child's jobs ran again, in another process
            assert {e["pid"] for e in runs if e["job_id"] == job_id} - {victim}
        assert len({e["job_id"] for e in runs}) == total
        # the dead child is reaped from the fleet; the two living children are in it
        wait_until(
            lambda: _fleet_pids(queue_app) == set(replaced),
            timeout=30,
            what="the fleet to show the two living children",
        )

        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, supervisor.output()[-3000:]
        assert _fleet_pids(queue_app) == set(), "every child deregistered"
        assert "exited with code 0" in supervisor.output()
    finally:
        supervisor.stop()


def _metrics_ports() -> int:
    """A port p with p + 1 free too (each API child serves /metrics on base + index)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def _posts_counted(port: int) -> float:
    """POST /jobs answered 201 by the API child serving /metrics on `port`."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vesper_http_requests_total{")
        and 'route="/jobs"' in line
        and 'status="201"' in line
    )


def _metrics_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _post_new_connection(url: str) -> int:
    with httpx.Client(base_url=url, timeout=10) as client:  # a connection of its own
        return client.post("/jobs", json={"type": "noop"}).status_code


def test_api_processes_2_share_the_port_replace_a_killed_child_and_stop_on_sigterm(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    base = _metrics_ports()
    env = {**store_env, "VESPER_METRICS_ADDR": f"127.0.0.1:{base}"}
    api = Service(env, tmp_path / "api.log", command=("api", "--processes", "2"))
    try:
        api.wait_ready()
        first = wait_until(
            lambda: _two_children(api.popen.pid), timeout=30, what="two API children"
        )
        wait_until(lambda: _metrics_up(base) and _metrics_up(base + 1), timeout=30, what="metrics")

        # new connections, until each child has answered some (bounded)
        for _ in range(400):
            assert _post_new_connection(api.url) == 201
            if _posts_counted(base) > 0 and _posts_counted(base + 1) > 0:
                break
        assert _posts_counted(base) > 0, "child 0 answered no request"
        assert _posts_counted(base + 1) > 0, "child 1 answered no request"

        os.kill(first[0], signal.SIGKILL)
        # the other child keeps accepting on the shared socket meanwhile
        assert all(_post_new_connection(api.url) == 201 for _ in range(5))
        replaced = wait_until(
            lambda: (pids := _two_children(api.popen.pid)) and first[0] not in pids and pids,
            timeout=30,
            what="the killed child to be replaced",
        )
        assert first[1] in replaced
        wait_until(lambda: _metrics_up(base), timeout=30, what="the replacement's metrics")
        # the replacement (index 0 again: its metrics port) serves requests too
        for _ in range(400):
            assert _post_new_connection(api.url) == 201
            if _posts_counted(base) > 0:
                break
        assert _posts_counted(base) > 0, "the replacement answered no request"

        assert api.terminate(timeout=60) == 0, api.output()[-3000:]
        assert "all api processes stopped (exit 0)" in api.output()
    finally:
        api.stop()

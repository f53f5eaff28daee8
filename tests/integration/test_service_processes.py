"""`vesper serve` processes as a user runs them: the original README's curl examples,
a fleet of three processes on one database, and the consumer requirement."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import REPO, wait_until
from tests.integration.service import Service, free_port, services
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow

# The four submissions of the original README, byte for byte.
README_EXAMPLES = [
    '{\n    "type": "cleanup_temp_files",\n    "priority": 0,\n    "payload": {"directory": "/tmp"}\n  }',
    '{\n    "type": "resize_image",\n    "priority": 3,\n    "payload": {"image_url": "cat.png", "width": 640}\n  }',
    '{\n    "type": "send_welcome_email",\n    "priority": 7,\n    "payload": {"user_id": 123, "email": "user@example.com"}\n  }',
    '{\n    "type": "fraud_alert",\n    "priority": 10,\n    "payload": {"transaction_id": "tx_456", "risk_score": 0.95}\n  }',
]


def _curl(*args: str) -> str:
    result = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, check=True)
    return result.stdout


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
def test_readme_curl_examples_against_vesper_serve(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    with services([store_env], tmp_path) as (service,):
        ids = []
        for body in README_EXAMPLES:
            out = _curl(
                "-X",
                "POST",
                f"{service.url}/jobs",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            )
            job = json.loads(out)
            assert job["status"] in {"pending", "processing", "done"}
            ids.append(job["job_id"])
        for job_id in ids:
            wait_until(
                lambda job_id=job_id: (
                    json.loads(_curl(f"{service.url}/jobs/{job_id}"))["status"] == "done"
                ),
                timeout=30,
                what=f"job {job_id} done",
            )
        job = json.loads(_curl(f"{service.url}/jobs/{ids[1]}"))
        for field in (
            "job_id",
            "type",
            "priority",
            "payload",
            "status",
            "retries",
            "error",
            "created_at",
            "updated_at",
        ):
            assert field in job
        assert job["payload"] == {"image_url": "cat.png", "width": 640}
        workers = json.loads(_curl(f"{service.url}/workers"))
        assert workers["total_workers"] == 5  # WORKERS default
        assert [m["processes"] for m in workers["machines"]] == [1]
        assert json.loads(_curl(f"{service.url}/health"))["status"] == "ok"
        assert json.loads(_curl(f"{service.url}/ready"))["status"] == "ok"
        stats = json.loads(_curl(f"{service.url}/stats"))
        assert stats["by_status"]["done"] == 4
        metrics = _curl(f"{service.url}/metrics")
        assert "vesper_jobs_succeeded_total{" in metrics
        assert service.terminate() == 0


def test_three_serve_processes_share_one_store_and_see_each_other(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    envs = [{**store_env, "WORKERS": str(n)} for n in (10, 15, 5)]
    with services(envs, tmp_path) as fleet:
        # /ready answers once the store does; each process registers its workers just
        # after, so the fleet view converges rather than being complete at /ready.
        for service in fleet:
            wait_until(
                lambda service=service: service.get("/workers").json()["total_workers"] == 30,
                timeout=30,
                what=f"{service.url}/workers to count the 30 slots of all three processes",
            )
            body = service.get("/workers").json()
            assert body["total_workers"] == 30
            assert len(body["workers"]) == 3
            assert sorted(w["concurrency"] for w in body["workers"]) == [5, 10, 15]
        submitted = [
            fleet[i % 3].post("/jobs", json={"type": "resize_image", "payload": {"n": i}}).json()
            for i in range(30)
        ]
        for job in submitted:
            wait_until(
                lambda job=job: fleet[0].get(f"/jobs/{job['job_id']}").json()["status"] == "done",
                timeout=60,
                what="a job submitted to one process to be done",
            )
        done_by = {fleet[2].get(f"/jobs/{job['job_id']}").json()["worker_id"] for job in submitted}
        assert done_by == {None}  # a finished job holds no lease
        for service in fleet:
            assert service.terminate() == 0
    observer = App(store_env)
    try:
        assert observer.container.get_fleet()().processes == (), "every process deregistered"
    finally:
        observer.close()


def test_production_without_a_consumer_refuses_to_start_with_one_line(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    for extra in ({"APP_ENV": "production"}, {"REQUIRE_CONSUMER": "1"}):
        result = subprocess.run(
            [sys.executable, "-m", "vesper.entrypoints.cli", "serve"],
            cwd=REPO,
            env={**store_env, **extra, "PATH": "/usr/bin:/bin", "VESPER_AUTO_MIGRATE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "no consumer is registered" in result.stderr
        assert "Traceback" not in result.stderr


def test_worker_command_without_app_is_a_usage_error(store_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vesper.entrypoints.cli", "worker"],
        cwd=REPO,
        env={**store_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no consumer is registered" in result.stderr


def test_api_process_takes_jobs_that_a_worker_process_runs(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    api = Service(store_env, tmp_path / "api.log", command=("api",))
    worker = Service(
        store_env,
        tmp_path / "worker.log",
        command=("worker", "--processes", "1", "--app", "examples.app:app"),
    )
    try:
        api.wait_ready()
        job = api.post("/jobs", json={"type": "send_welcome_email", "payload": {}}).json()
        wait_until(
            lambda: api.get(f"/jobs/{job['job_id']}").json()["status"] == "done",
            timeout=30,
            what="the worker process to run the job",
        )
        assert api.get("/workers").json()["total_workers"] == 5
        assert worker.terminate() == 0
        assert api.terminate() == 0
    finally:
        api.stop()
        worker.stop()


def _serve_output(tmp_path: Path, name: str, host: str, **env: str) -> tuple[int, str]:
    port = free_port()
    env = {"VESPER_STORAGE": "memory", "API_ADDR": f"{host}:{port}", **env}
    (tmp_path / name).mkdir()
    with services([env], tmp_path / name, port=port) as (service,):
        return port, service.output()


def test_serve_logs_its_address_and_warns_when_open_without_a_token(tmp_path: Path) -> None:
    port, output = _serve_output(tmp_path, "loopback", "127.0.0.1")
    assert f"vesper API listening on http://127.0.0.1:{port}" in output
    assert "VESPER_API_TOKEN" not in output

    port, output = _serve_output(tmp_path, "everywhere", "0.0.0.0")
    assert f"vesper API listening on http://0.0.0.0:{port}" in output
    warnings = [line for line in output.splitlines() if "VESPER_API_TOKEN is not set" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]

    _, output = _serve_output(tmp_path, "guarded", "0.0.0.0", VESPER_API_TOKEN="s3cret")
    assert "VESPER_API_TOKEN is not set" not in output

"""`./dev` forwards any command it does not own to the venv's `vesper`: after the quick
start, `vesper` is on no PATH, and `./dev enqueue ...` is how a new user reaches it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import REPO


def dev(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "dev"), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the tests read the exit code
    )


def test_dev_forwards_a_command_and_its_options_to_vesper(tmp_path: Path) -> None:
    result = dev("status", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: vesper status [OPTIONS]")


def test_dev_enqueue_stores_a_job(tmp_path: Path) -> None:
    env = {"VESPER_STORAGE": "sqlite", "DB_PATH": str(tmp_path / "q.db")}
    result = dev("enqueue", "greet", "--payload", '{"name": "ada"}', cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["type"], job["payload"], job["status"]) == ("greet", {"name": "ada"}, "pending")


def test_dev_reports_vesper_usage_errors_with_vespers_exit_code(tmp_path: Path) -> None:
    result = dev("no-such-command", cwd=tmp_path)
    assert result.returncode == 2
    assert "No such command 'no-such-command'" in result.stderr

"""Real `vesper` processes for integration tests: start, signal, read their ledgers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
LEDGER_APP = "tests.integration.apps.ledger:app"

T = TypeVar("T")

# Short timings so that recovery happens within seconds (docs/reliability.md's test timings).
FAST = {
    "VESPER_LEASE": "3s",
    "VESPER_HEARTBEAT": "500ms",
    "VESPER_DEAD_AFTER": "3s",
    "VESPER_POLL_INTERVAL": "200ms",
    "VESPER_RETRY_BASE": "200ms",
    "VESPER_RETRY_CAP": "2s",
}


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class WorkerProcess:
    """A `vesper worker` subprocess with its own environment and log file (with
    `processes` > 1, the supervisor of that many)."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, *, app: str = LEDGER_APP, processes: int = 1
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        command = ["worker", "--processes", str(processes), "--app", app]
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "vesper.entrypoints.cli", *command],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """Make sure the process is gone (kill it if a test left it running)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:  # stop() closed it: what was written is in the file
            self._log.flush()
        return self.log_path.read_text(errors="replace")


@contextmanager
def workers(
    count: int, env: Mapping[str, str], tmp_path: Path, *, app: str = LEDGER_APP
) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(env, tmp_path / f"worker-{i}.log", app=app) for i in range(count)]
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def read_ledger(directory: Path) -> list[dict[str, Any]]:
    """Every ledger line of every process; a torn last line (kill -9) is skipped."""
    entries: list[dict[str, Any]] = []
    if not directory.exists():
        return entries
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


def starts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == "start"]


def children(pid: int) -> list[int]:
    """The pids of the living children of process `pid` (Linux)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]

"""The systems under test: how to set each up, empty it, run its worker, count its work.

Every system is driven by a script in drivers/ run by its own interpreter (vesper's
venv, or the peers' venv), so that the peers never share vesper's environment.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DRIVERS = Path(__file__).resolve().parent / "drivers"
PEERS_VENV = Path(__file__).resolve().parent / ".peers-venv"
PEERS_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-peers.txt"


@dataclass
class System:
    name: str
    python: str
    driver: str
    url: str
    reset_sql: list[str]
    remaining_sql: str  # jobs not finished yet
    ready_sql: str | None = None  # a worker counts as ready when this returns >= processes
    env: dict[str, str] = field(default_factory=dict)
    workloads: tuple[str, ...] | None = None  # None: every workload it can run
    slots: int | None = None  # its workers' slots (None: the suite's concurrency)

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def command(self, command: str, *options: str) -> list[str]:
        return [self.python, str(DRIVERS / self.driver), command, "--url", self.url, *options]

    def run(self, command: str, *options: str, timeout: float = 300) -> dict[str, Any]:
        """Run a driver command; its last stdout line is a JSON object."""
        import json  # noqa: PLC0415

        done = subprocess.run(
            self.command(command, *options),
            cwd=REPO,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"{self.name} {command} failed: " + " | ".join(tail))
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def worker(
        self,
        ready: Path,
        ledger: Path | None,
        log: Path,
        concurrency: int,
        extra_env: Mapping[str, str] | None = None,
    ) -> Worker:
        concurrency = self.slots or concurrency
        if self.driver == "vesper_driver.py":
            storage = "sqlite" if self.sqlite else "postgres"
            argv = [self.python, "-m", "vesper.entrypoints.cli", "worker", "--processes", "1", "--app",
                    "benchmarks.drivers.vesper_app:app"]  # fmt: skip
            env = {
                "VESPER_STORAGE": storage,
                "VESPER_DATABASE_URL": self.url,
                "WORKERS": str(concurrency),
                "VESPER_BENCH_LEDGER": str(ledger or ""),
                "VESPER_LOG_FORMAT": "text",
            }
        else:
            options = ["--concurrency", str(concurrency), "--ready", str(ready)]
            if ledger is not None:
                options += ["--ledger", str(ledger)]
            argv, env = self.command("worker", *options), {}
        return Worker(argv, {**os.environ, **self.env, **env, **(extra_env or {})}, log)

    def query(self, sql: str) -> int:
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path, timeout=30) as conn:
                return int(conn.execute(sql).fetchone()[0])
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            return int(row[0]) if row else 0

    def reset(self) -> None:
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path, timeout=30) as conn:
                for sql in self.reset_sql:
                    conn.execute(sql)
            return
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url, autocommit=True) as conn:
            for sql in self.reset_sql:
                conn.execute(sql)  # type: ignore[arg-type]


class Worker:
    """A worker subprocess; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            argv, cwd=REPO, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


def vesper_postgres(url: str, *, slots: int | None = None) -> System:
    """vesper on PostgreSQL; with `slots`, the row `vesper-slots<N>`: its workers run N
    slots (the README's setting for many short jobs: one claim and one commit carry up
    to that many jobs), on the workloads that setting changes."""
    return System(
        name="vesper" if slots is None else f"vesper-slots{slots}",
        slots=slots,
        workloads=None if slots is None else ("W3", "W3x2", "W4"),
        python=sys.executable,
        driver="vesper_driver.py",
        url=url,
        reset_sql=["TRUNCATE vesper_jobs, vesper_workers, vesper_queues RESTART IDENTITY"],
        remaining_sql="SELECT count(*) FROM vesper_jobs WHERE status <> 'done'",
        ready_sql="SELECT count(*) FROM vesper_workers",
    )


def vesper_sqlite(path: Path) -> System:
    return System(
        name="vesper-sqlite",
        python=sys.executable,
        driver="vesper_driver.py",
        url=f"sqlite:///{path}",
        reset_sql=[
            "DELETE FROM vesper_jobs",
            "DELETE FROM vesper_workers",
            "DELETE FROM vesper_queues",
        ],
        remaining_sql="SELECT count(*) FROM vesper_jobs WHERE status <> 'done'",
        ready_sql="SELECT count(*) FROM vesper_workers",
    )


def peer_python() -> str:
    return str(PEERS_VENV / "bin" / "python")


def procrastinate(url: str) -> System:
    return System(
        name="procrastinate",
        python=peer_python(),
        driver="procrastinate_driver.py",
        url=url,
        reset_sql=[
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers"
            " RESTART IDENTITY CASCADE"
        ],
        remaining_sql="SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'",
    )


def pgqueuer(url: str, driver: str = "asyncpg", batch_size: int | None = None) -> System:
    """pgqueuer on asyncpg (`pgq run`'s and its README's default), or on psycopg; with
    `batch_size`, its worker dequeues that many jobs a round trip (`pgq run
    --batch-size`, default 10), and it runs only the workloads that setting changes."""
    name = "pgqueuer" if driver == "asyncpg" else f"pgqueuer-{driver}"
    env = {"PGQ_BENCH_DRIVER": driver}
    workloads = None
    if batch_size is not None:
        name += f"-batch{batch_size}"
        env["PGQ_BENCH_BATCH"] = str(batch_size)
        workloads = ("W3", "W3x2", "W4")
    return System(
        name=name,
        python=peer_python(),
        driver="pgqueuer_driver.py",
        url=url,
        reset_sql=["TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY"],
        remaining_sql="SELECT count(*) FROM pgqueuer",
        env=env,
        workloads=workloads,
    )


def ensure_peers_venv(echo: Any = print) -> None:
    """Create the peers' venv and install their pinned versions (once)."""
    python = Path(peer_python())
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import procrastinate, pgqueuer, asyncpg, matplotlib"],
            capture_output=True,
            check=False,
        )
        if check.returncode == 0:
            return
    echo(f"installing the peers into {PEERS_VENV} (once) ...")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)], check=True
    )


def wait_for(predicate: Any, *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

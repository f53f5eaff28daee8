"""The fault lab: processes, stores, ledger and evidence for one matrix row.

Rows (tests/faults/rows/) take a Lab and a scale and return a RowResult: figures and a
list of failed criteria. pytest asserts the list is empty; benchmarks/fault_matrix.py
prints the figures. Both run the same code.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg

from tests.faults.checker import Options, Report, check
from tests.faults.cluster import PgCluster
from tests.faults.proxy import TcpProxy
from tests.integration.harness import WorkerProcess, read_ledger
from tests.integration.service import Service
from vesper.entrypoints.app import App

FAULTS_APP = "tests.faults.apps.ledger:app"

# docs/reliability.md's test timings, scaled to 2 cores: lease 4 s, heartbeat 0.5 s.
LEASE_S = 4.0
POLL_S = 0.3
TIMING = {
    "VESPER_LEASE": f"{LEASE_S:g}s",
    "VESPER_HEARTBEAT": "500ms",
    "VESPER_DEAD_AFTER": f"{LEASE_S:g}s",
    "VESPER_POLL_INTERVAL": f"{POLL_S * 1000:g}ms",
    "VESPER_RETRY_BASE": "200ms",
    "VESPER_RETRY_CAP": "2s",
    "VESPER_SHUTDOWN_GRACE": "10s",
    "VESPER_LOG_FORMAT": "text",
}
# I7: min(lease, dead_after + heartbeat) + poll + 2 s
BOUND_S = min(LEASE_S, LEASE_S + 0.5) + POLL_S + 2.0

_LEASE_LOST = re.compile(r"job ([0-9a-f-]{36}): lease (?:lost|not renewed)")


@attrs.define
class RowResult:
    row: str
    figures: dict[str, Any] = attrs.field(factory=dict)
    failures: list[str] = attrs.field(factory=list)
    seconds: float = 0.0

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    def expect_clean(self, report: Report, *ignore: str) -> None:
        violations = report.violations(*ignore)
        for name, count in violations.items():
            self.failures.append(f"{name}={count}")
        if violations:
            self.failures.extend(report.notes)
        self.figures.update(dict(report.figures.items()))

    def line(self) -> str:
        status = "PASS" if not self.failures else "FAIL"
        figures = " ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items())
        failed = f" failed: {'; '.join(self.failures)}" if self.failures else ""
        return f"{self.row:<5} {status} {self.seconds:6.1f}s {figures}{failed}"


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


class Lab:
    """Owns everything a row starts; `close()` stops it all."""

    def __init__(self, root: Path, cluster: PgCluster | None, *, scale: str = "ci") -> None:
        self.root = root
        self.cluster = cluster
        self.scale = scale
        self.ledger_dir = root / "ledger"
        self.faults: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._closers: list[Callable[[], None]] = []
        self._count = 0

    # -- stores -------------------------------------------------------------------------

    def pg_database(self, *, migrate: bool = True) -> str:
        """A new, migrated database on the disposable cluster; dropped at close."""
        cluster = self.need_cluster()
        name = cluster.create_database()
        self._closers.append(lambda: _quietly(lambda: cluster.drop_database(name)))
        if migrate:
            app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": cluster.url(name)})
            try:
                app.container.store()
            finally:
                app.close()
        return name

    def need_cluster(self) -> PgCluster:
        if self.cluster is None:
            raise RuntimeError("this row needs the disposable PostgreSQL cluster")
        return self.cluster

    def pg_app(self, database: str) -> App:
        app = App(
            {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": self.need_cluster().url(database)}
        )
        self._closers.append(app.close)
        return app

    def sqlite_env(self, name: str = "queue") -> dict[str, str]:
        return {"VESPER_STORAGE": "sqlite", "DB_PATH": str(self.root / f"{name}.db")}

    def env(self, store: Mapping[str, str], **extra: str) -> dict[str, str]:
        return {**TIMING, **store, "VESPER_TEST_LEDGER": str(self.ledger_dir), **extra}

    # -- processes ----------------------------------------------------------------------

    def worker(
        self, env: Mapping[str, str], *, extra_env: Mapping[str, str] = {}, app: str = FAULTS_APP
    ) -> WorkerProcess:
        self._count += 1
        process = WorkerProcess(
            {**env, **extra_env}, self.root / f"worker-{self._count}.log", app=app
        )
        self._closers.append(process.stop)
        return process

    def service(
        self,
        env: Mapping[str, str],
        command: Sequence[str] = ("api",),
        *,
        ready: bool = True,
        port: int | None = None,
    ) -> Service:
        self._count += 1
        log = self.root / f"{command[0]}-{self._count}.log"
        service = Service(env, log, command=command, port=port)
        self._closers.append(service.stop)
        if ready:
            service.wait_ready(timeout=60)
        return service

    def proxy(self) -> TcpProxy:
        cluster = self.need_cluster()
        proxy = TcpProxy(cluster.host, cluster.port).start()
        self._closers.append(proxy.close)
        return proxy

    # -- evidence -----------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        return read_ledger(self.ledger_dir)

    def open_starts(self, pid: int) -> set[str]:
        mine = [e for e in self.ledger() if e["pid"] == pid]
        opened = {(e["job_id"], e["token"]) for e in mine if e["event"] == "start"}
        closed = {(e["job_id"], e["token"]) for e in mine if e["event"] != "start"}
        return {job_id for job_id, _ in opened - closed}

    def fault(
        self, kind: str, pid: int | None, *, database: str | None = None, **extra: Any
    ) -> None:
        """Record a fault (call it right before or after injecting it)."""
        db_now = self.db_now(database) if database else datetime.now(UTC)
        self.faults.append(
            {"kind": kind, "pid": pid, "mono": time.monotonic_ns(), "db_now": db_now, **extra}
        )

    @contextmanager
    def injecting(
        self, kind: str, pid: int | None, *, database: str | None = None, **extra: Any
    ) -> Iterator[None]:
        """Record a fault around its injection (pg_ctl takes a moment to bring the server
        down): a consumer that starts before it has taken effect may be its victim."""
        self.fault(kind, pid, database=database, **extra)
        record = self.faults[-1]
        try:
            yield
        finally:
            record["mono_end"] = time.monotonic_ns()

    def db_now(self, database: str) -> datetime:
        rows = self.need_cluster().execute("SELECT statement_timestamp()", database=database)
        moment: datetime = rows[0][0]
        return moment

    def dump_pg(self, database: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.need_cluster().conninfo(database), autocommit=True) as conn:
            cursor = conn.execute(f"SELECT {_COLUMNS} FROM vesper_jobs")
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def dump_sqlite(self, path: Path) -> list[dict[str, Any]]:
        with sqlite3.connect(path, timeout=30) as conn:
            cursor = conn.execute(f"SELECT {_COLUMNS} FROM vesper_jobs")
            names = [c[0] for c in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            for name in _TIMES:
                if isinstance(row[name], str):
                    row[name] = datetime.fromisoformat(row[name]).replace(tzinfo=UTC)
            row["job_id"] = _uuid_text(row["job_id"])
        return rows

    def lease_lost(self, processes: Sequence[WorkerProcess | Service]) -> list[str]:
        """Job ids whose outcome a process reported as rejected (fencing) or abandoned."""
        return [m for p in processes for m in _LEASE_LOST.findall(p.output())]

    def check(
        self,
        jobs: Sequence[Mapping[str, Any]],
        options: Options | None = None,
        *,
        ledger: Sequence[Mapping[str, Any]] | None = None,
    ) -> Report:
        entries = self.ledger() if ledger is None else ledger
        return check(jobs, entries, self.responses, self.faults, options or Options())

    def activity(self, database: str) -> list[dict[str, Any]]:
        """vesper's sessions on `database` now: state, state age, transaction age."""
        rows = self.need_cluster().execute(
            """SELECT application_name, state,
                      EXTRACT(EPOCH FROM now() - state_change)::float,
                      EXTRACT(EPOCH FROM now() - xact_start)::float, query
               FROM pg_stat_activity
               WHERE datname = %s AND application_name LIKE 'vesper%%'
                 AND application_name <> 'vesper-faults-harness'""",
            (database,),
            database=database,
        )
        return [
            {"application_name": a, "state": s, "state_age": sa, "xact_age": xa, "query": q}
            for a, s, sa, xa, q in rows
        ]

    def close(self) -> None:
        for closer in reversed(self._closers):
            _quietly(closer)
        self._closers.clear()


_TIMES = ("run_at", "created_at", "started_at", "finished_at", "lease_expires_at")
_COLUMNS = (
    "CAST(id AS TEXT) AS job_id, status, retries, attempts, max_retries, idempotency_key, "
    "priority, seq, type, error, worker_id, " + ", ".join(_TIMES)
)


def _uuid_text(value: Any) -> str:
    text = str(value)
    if len(text) == 32:
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return text


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # a teardown step that fails must not hide the row's result
        return


@contextmanager
def lab(root: Path, cluster: PgCluster | None, scale: str = "ci") -> Iterator[Lab]:
    made = Lab(root, cluster, scale=scale)
    try:
        yield made
    finally:
        made.close()


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until truthy; None after `timeout` (the row records the failure itself)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def kill(process: WorkerProcess | Service, signum: int = signal.SIGKILL) -> None:
    process.popen.send_signal(signum)


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    result: dict[str, int] = {}
    for row in rows:
        result[row["status"]] = result.get(row["status"], 0) + 1
    return result


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)

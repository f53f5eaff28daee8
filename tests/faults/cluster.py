"""A disposable PostgreSQL 15 cluster that fault tests may stop, crash and restart.

initdb refuses root, so every server command runs as the `postgres` user (runuser) in a
temporary directory that user owns. The cluster listens on 127.0.0.1 at a free port
with password authentication over TCP (the R6 wrong-password row needs it) and trust
on its private Unix socket. The shared 127.0.0.1:5432 cluster is never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

BIN = Path(os.environ.get("VESPER_FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
PASSWORD = "vesper-faults-" + secrets.token_hex(4)  # per run: tests grep logs for it


class ClusterError(RuntimeError):
    """The disposable cluster could not be created or started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    command = ["runuser", "-u", SUPERUSER, "--", *args] if os.geteuid() == 0 else args
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-800:]}")
    return done.stdout


class PgCluster:
    """initdb + pg_ctl in a temporary directory; start/stop/restart/crash on command."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="vesper-faults-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.extra_env: dict[str, str] = {}  # e.g. LD_PRELOAD + FAKETIME for DB skew

    # -- lifecycle ----------------------------------------------------------------------

    def init(self) -> PgCluster:
        if not (BIN / "initdb").exists():
            raise ClusterError(f"no PostgreSQL binaries at {BIN}")
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam(SUPERUSER).pw_uid, -1)
        _as_postgres(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        return self

    def options(self) -> str:
        return " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=on",
                "-c max_connections=300",
                "-c log_min_messages=warning",
                "-c log_line_prefix='%m [%p] %a '",
                "-c shared_buffers=64MB",
            ]
        )

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        _as_postgres(
            [str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args],
            env=self.extra_env,
            timeout=timeout,
        )

    def start(self) -> None:
        self._pg_ctl("-o", self.options(), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """mode: smart, fast or immediate (a crash: recovery runs at the next start)."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg_ctl("-o", self.options(), "-m", mode, "-w", "-t", "60", "restart")

    def running(self) -> bool:
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- connections --------------------------------------------------------------------

    def conninfo(self, database: str = "postgres") -> str:
        return (
            f"host={self.host} port={self.port} user={SUPERUSER} password={PASSWORD} "
            f"dbname={database} application_name=vesper-faults-harness"
        )

    def url(self, database: str, *, password: str | None = None) -> str:
        secret = PASSWORD if password is None else password
        return f"postgresql+psycopg://{SUPERUSER}:{secret}@{self.host}:{self.port}/{database}"

    def env(self, database: str, *, port: int | None = None) -> dict[str, str]:
        """vesper's environment for `database` (DB_* variables, as users configure it)."""
        return {
            "VESPER_STORAGE": "postgres",
            "DB_HOST": self.host,
            "DB_PORT": str(port or self.port),
            "DB_USER": SUPERUSER,
            "DB_PASSWORD": PASSWORD,
            "DB_NAME": database,
        }

    def execute(self, sql: str, params: Any = None, *, database: str = "postgres") -> list[Any]:
        with psycopg.connect(self.conninfo(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, prefix: str = "vf_") -> str:
        name = f"{prefix}{secrets.token_hex(5)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(name)
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_accepting(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster did not accept connections in {timeout:.0f}s")
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_cluster() -> PgCluster:
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        cluster.wait_accepting()
    except BaseException:
        cluster.destroy()
        raise
    return cluster

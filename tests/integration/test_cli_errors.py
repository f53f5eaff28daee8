"""A bad input to the `vesper` command or a bad setting is one line naming it, exit 2,
no traceback, and nothing stored (real `vesper` processes on a SQLite file)."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vesper.domain.errors import InvalidRequest
from vesper.entrypoints.app import App


def vesper(args: list[str], env: dict[str, str], db: Path) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("VESPER_", "DB_"))}
    full |= {"VESPER_STORAGE": "sqlite", "DB_PATH": str(db), **env}
    return subprocess.run(
        [sys.executable, "-m", "vesper.entrypoints.cli", *args],
        cwd=db.parent,  # no .env of the checkout
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the tests read the exit code
    )


def stored_jobs(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        return (
            connection.execute("SELECT count(*) FROM vesper_jobs").fetchone()[0]
            if "vesper_jobs" in tables
            else 0
        )


CASES = {
    "payload a list": (["enqueue", "t", "--payload", "[1]"], {}, "--payload '[1]'"),
    "payload pairs": (["enqueue", "t", "--payload", '[["a",1]]'], {}, "--payload '[[\"a\",1]]'"),
    "payload a string": (["enqueue", "t", "--payload", '"x"'], {}, "--payload '\"x\"'"),
    "payload not JSON": (["enqueue", "t", "--payload", "{"], {}, "--payload '{'"),
    "delay nan": (["enqueue", "t", "--delay", "nan"], {}, "--delay nan"),
    "delay inf": (["enqueue", "t", "--delay", "inf"], {}, "--delay inf"),
    "log level": (["enqueue", "t"], {"VESPER_LOG_LEVEL": "LOUD"}, "VESPER_LOG_LEVEL='LOUD'"),
    "log level serve": (["serve"], {"VESPER_LOG_LEVEL": "LOUD"}, "VESPER_LOG_LEVEL='LOUD'"),
    "sslmode": (
        ["enqueue", "t"],
        {"VESPER_STORAGE": "postgres", "DB_HOST": "127.0.0.1", "DB_SSLMODE": "bogus"},
        "DB_SSLMODE='bogus'",
    ),
    "db port": (
        ["status"],
        {"VESPER_STORAGE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": "99999"},
        "DB_PORT='99999'",
    ),
    "duration overflow": (["enqueue", "t"], {"VESPER_LEASE": "99999999999999h"}, "VESPER_LEASE="),
    "database url": (
        ["enqueue", "t"],
        {"VESPER_DATABASE_URL": "nonsense"},
        "VESPER_DATABASE_URL=<hidden>",
    ),
}


@pytest.mark.parametrize(("args", "env", "named"), CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_nothing_stored(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    db = tmp_path / "q.db"
    result = vesper(args, env, db)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"vesper: {named}"), lines[0]
    assert stored_jobs(db) == 0


def test_a_good_enqueue_is_stored(tmp_path: Path) -> None:
    """The same command with good input stores the job: the cases above fail for their
    input, not for the setup."""
    db = tmp_path / "q.db"
    result = vesper(["enqueue", "t", "--payload", '{"a": 1}', "--delay", "5"], {}, db)
    assert result.returncode == 0, result.stderr
    assert stored_jobs(db) == 1


@pytest.mark.parametrize("payload", [[("a", 1)], [], "ab", 1], ids=repr)
def test_app_enqueue_refuses_a_payload_that_is_not_a_mapping(payload: object) -> None:
    app = App({"VESPER_STORAGE": "memory"})
    with pytest.raises(InvalidRequest, match=r"^payload: must be a JSON object"):
        app.enqueue("t", payload)  # type: ignore[arg-type]
    assert app.container.get_stats()().counts == {}
    app.close()


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf])
def test_app_enqueue_refuses_a_delay_that_is_not_finite(delay: float) -> None:
    app = App({"VESPER_STORAGE": "memory"})
    with pytest.raises(InvalidRequest, match=r"^delay: is out of range"):
        app.enqueue("t", {}, delay=delay)
    app.close()


def test_enqueue_refuses_the_memory_store_which_would_lose_the_job(tmp_path: Path) -> None:
    result = vesper(["enqueue", "t"], {"VESPER_STORAGE": "memory"}, tmp_path / "q.db")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "vesper: VESPER_STORAGE=memory keeps jobs inside one process: `vesper enqueue` would "
        "lose the job at exit; use sqlite or postgres"
    ]


def test_worker_on_the_memory_store_warns_in_one_line(tmp_path: Path) -> None:
    """The worker still runs (an embedding app may submit in-process), but says that
    nothing outside it can reach its queue; without --app it is then refused as usual,
    which ends the process at once."""
    env = {"VESPER_STORAGE": "memory"}
    result = vesper(["worker"], env, tmp_path / "q.db")  # no --app: refused after the warning
    assert result.returncode == 2
    warnings = [line for line in result.stderr.splitlines() if "VESPER_STORAGE=memory" in line]
    assert warnings == [
        "vesper: warning: VESPER_STORAGE=memory: this worker sees only jobs submitted "
        "inside this process, and nothing survives its exit"
    ]

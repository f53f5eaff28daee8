"""`vesper queues` on a SQLite file: the table, --json, pause, resume and set (with
"none" clearing a limit), and one clear line for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli_store import vesper
from vesper.entrypoints.app import App


def test_list_pause_resume_and_set(tmp_path: Path) -> None:
    env = {"VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}", "VESPER_AUTO_MIGRATE": "1"}
    app = App({"VESPER_STORAGE": "sqlite", **env})
    try:
        app.enqueue("send", queue="email")
        app.enqueue("resize", queue="media")
    finally:
        app.close()

    table = vesper("queues", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["QUEUE", "PENDING"]
    assert [line.split()[:2] for line in lines[1:]] == [["email", "1"], ["media", "1"]]

    paused = vesper("queues", "pause", "email", env=env)
    assert json.loads(paused.stdout)["paused"] is True
    assert "PAUSED" in vesper("queues", env=env).stdout.splitlines()[1]
    assert json.loads(vesper("queues", "resume", "email", env=env).stdout)["paused"] is False

    set_ = vesper("queues", "set", "email", "--concurrency", "3", "--rate", "10/1m", env=env)
    assert (json.loads(set_.stdout)["concurrency"], json.loads(set_.stdout)["rate"]) == (3, "10/1m")
    cleared = json.loads(vesper("queues", "set", "email", "--concurrency", "none", env=env).stdout)
    assert (cleared["concurrency"], cleared["rate"]) == (None, "10/1m")
    rows = json.loads(vesper("queues", "--json", env=env).stdout)
    assert [(r["name"], r["concurrency"], r["rate"]) for r in rows] == [
        ("email", None, "10/1m"),
        ("media", None, None),
    ]


def test_a_bad_value_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {"VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}", "VESPER_AUTO_MIGRATE": "1"}
    for option, value in (("--concurrency", "0"), ("--concurrency", "²"), ("--rate", "fast")):
        bad = vesper("queues", "set", "email", option, value, env=env)
        assert bad.returncode == 2, bad.stderr
        errors = [line for line in bad.stderr.splitlines() if not line.startswith("vesper: store")]
        assert len(errors) == 1, bad.stderr
        assert option.removeprefix("--") in errors[0]
    assert vesper("queues", "set", "no spaces", "--concurrency", "1", env=env).returncode == 2

"""`vesper status --watch`: the frame it draws, its throughput, and a real process that
redraws every interval and stops cleanly on Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from tests.integration.harness import REPO, wait_until
from vesper.domain.fleet import Fleet, WorkerProcess
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats
from vesper.entrypoints.app import App
from vesper.entrypoints.status import Sample, render, throughput, watch_status

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def stats(**counts: int) -> QueueStats:
    by_key = {}
    for key, n in counts.items():
        status, _, priority = key.rpartition("_")
        by_key[(Status(status), int(priority))] = n
    return QueueStats(counts=by_key, oldest_due_run_at=NOW - timedelta(seconds=12), now=NOW)


def fleet() -> Fleet:
    process = WorkerProcess(
        id="m1-42-abc", machine="m1", pid=42, concurrency=5, started_at=NOW, last_heartbeat=NOW
    )
    return Fleet.of([process])


def text_of(renderable: object) -> str:
    console = Console(record=True, width=140)
    console.print(renderable)
    return console.export_text()


def test_throughput_from_two_samples() -> None:
    before = Sample(at=10.0, stats=stats(pending_0=10, done_0=5), fleet=fleet())
    after = Sample(at=12.0, stats=stats(pending_0=12, done_0=9, dlq_0=2), fleet=fleet())
    assert throughput(None, after) is None
    rate = throughput(before, after)
    assert rate is not None
    assert rate.finished_per_second == 3.0  # (9 + 2 - 5) / 2 s
    assert rate.submitted_per_second == 4.0  # (23 - 15) / 2 s


def test_a_frame_shows_depth_by_status_and_priority_throughput_and_fleet() -> None:
    sample = Sample(at=1.0, stats=stats(pending_7=3, pending_0=4, processing_7=2), fleet=fleet())
    before = Sample(at=0.0, stats=stats(pending_7=3, pending_0=4), fleet=fleet())
    text = text_of(render(sample, throughput(before, sample), now=NOW))
    assert "vesper status  03:04:05" in text
    assert "finished 0.0/s  submitted 2.0/s" in text
    assert "fleet: 1 processes, 5 slots" in text
    assert "12.0s" in text  # the oldest due job
    priority_rows = [line for line in text.splitlines() if line.strip().startswith("│")]
    assert any("7 │" in row and "3 │" in row and "2 │" in row for row in priority_rows)
    assert "m1-42-abc" in text
    assert "throughput: measuring" in text_of(render(sample, None, now=NOW))


def test_watch_draws_count_frames_in_process(tmp_path: Path) -> None:
    app = App({"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"})
    app.enqueue("x", priority=4)
    console = Console(record=True, width=140, force_terminal=True)
    try:
        watch_status(app, console, interval=0.05, count=2)
    finally:
        app.close()
    text = console.export_text()
    assert "finished 0.0/s" in text  # the second frame had a rate


def test_watch_process_redraws_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "watch.out"
    env = {
        **os.environ,
        "VESPER_STORAGE": "sqlite",
        "VESPER_DATABASE_URL": f"sqlite:///{tmp_path}/q.db",
        "TTY_COMPATIBLE": "1",  # rich: draw live frames into the file as into a terminal
        "COLUMNS": "140",
    }
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "vesper.entrypoints.cli", "status", "--watch"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: out.read_text(errors="replace").count("vesper status") >= 3,
                timeout=20,
                what="three frames",
            )
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = out.read_text(errors="replace")
    assert "Traceback" not in text
    assert "submitted 0.0/s" in text

"""A fleet split by queue, and the queues' fleet-wide controls, with real `vesper worker`
processes on a shared SQLite file and a shared PostgreSQL database: routing, pause,
concurrency (300 jobs of 50 ms over three processes of 4 slots), key concurrency, rate
and aging."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import FAST, WorkerProcess, read_ledger, starts, wait_until
from vesper.domain.job import JobRecord
from vesper.domain.queues import QueueChange
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow

APPS = "tests.integration.apps.by_queue"
POLL = 0.2  # FAST's VESPER_POLL_INTERVAL


def _env(store_env: dict[str, str], ledger: Path, **more: str) -> dict[str, str]:
    return {**store_env, **FAST, "VESPER_TEST_LEDGER": str(ledger), **more}


def _count(app: App, queue: str, status: Status) -> int:
    for view in app.container.list_queues()():
        if view.state.name == queue:
            return view.state.counts[status]
    return 0


def _overlap(entries: Iterable[dict[str, Any]]) -> int:
    """The most jobs running at once, from their start and end lines."""
    events = sorted((e["t"], 1 if e["event"] == "start" else -1) for e in entries)
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start
        running += step
        peak = max(peak, running)
    return peak


def test_each_job_runs_where_its_queue_and_type_are_served(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = _env(store_env, ledger)
    mail = WorkerProcess(
        {**env, "VESPER_QUEUES": "email=3,default=2"}, tmp_path / "mail.log", app=f"{APPS}:mail"
    )
    media = WorkerProcess(
        {**env, "VESPER_QUEUES": "media=3"}, tmp_path / "media.log", app=f"{APPS}:media"
    )
    try:
        fleet = queue_app.container.get_fleet()
        wait_until(lambda: len(fleet().processes) == 2, timeout=30, what="two processes")
        served = {p.pid: (p.queues, p.types) for p in fleet().processes}
        assert served[mail.pid] == ({"email": 3, "default": 2}, ("email", "report"))
        assert served[media.pid] == ({"media": 3}, ("media",))
        # 1,000 jobs over three queues (report names none: it goes to "default")
        queue_of = {"email": "email", "media": "media", "report": None}
        requests = [
            JobRequest(type=t, queue=queue_of[t])
            for t in (("email", "media", "report")[i % 3] for i in range(999))
        ]
        jobs = []
        for start in range(0, len(requests), 333):
            jobs += queue_app.enqueue_many(requests[start : start + 333])
        assert {(j.type, j.queue) for j in jobs} == {
            ("email", "email"),
            ("media", "media"),
            ("report", "default"),
        }
        stranded = queue_app.enqueue("media", queue="email")  # media is served, not in email
        nobody = queue_app.enqueue("fax", queue="media")
        wait_until(
            lambda: (
                sum(_count(queue_app, q, Status.DONE) for q in ("email", "media", "default"))
                == len(jobs)
            ),
            timeout=120,
            what="every routed job to be done",
        )
        by_pid = {e["job_id"]: e["pid"] for e in starts(read_ledger(ledger))}
        assert len(starts(read_ledger(ledger))) == len(jobs), "each job ran once"
        expected = {"email": mail.pid, "report": mail.pid, "media": media.pid}
        wrong = [j for j in jobs if by_pid.get(str(j.id)) != expected[j.type]]
        assert not wrong, f"{len(wrong)} jobs ran in a process that does not serve them"
        get = queue_app.container.get_job()
        assert get(stranded.id) == stranded
        assert get(nobody.id) == nobody
        unserved = {v.state.name: v.unserved_types for v in queue_app.container.list_queues()()}
        assert unserved == {"default": (), "email": ("media",), "media": ("fax",)}
    finally:
        mail.stop()
        media.stop()


def test_pause_stops_starts_within_a_poll_interval_and_resume_drains(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = _env(store_env, ledger, VESPER_QUEUES="email=4")
    procs = [WorkerProcess(env, tmp_path / f"w{i}.log", app=f"{APPS}:mail") for i in range(2)]
    configure = queue_app.container.configure_queue()
    try:
        fleet = queue_app.container.get_fleet()
        wait_until(lambda: len(fleet().processes) == 2, timeout=30, what="two processes")
        queue_app.enqueue_many(
            [JobRequest(type="email", queue="email", payload={"sleep": 0.02}) for _ in range(400)]
        )
        wait_until(lambda: len(starts(read_ledger(ledger))) >= 20, timeout=30, what="jobs running")
        configure("email", QueueChange(paused=True))
        paused_at = time.time()
        time.sleep(1.0)
        # PostgreSQL: every claim reads the queue's row live, and a claim committed just
        # before the pause starts its jobs within milliseconds; SQLite: one poll interval
        bound = 0.1 if store_env["VESPER_STORAGE"] == "postgres" else POLL
        late = [e for e in starts(read_ledger(ledger)) if e["t"] > paused_at + bound]
        assert not late, f"{len(late)} jobs started more than {bound}s after the pause"
        left = _count(queue_app, "email", Status.PENDING)
        assert left > 0, "the queue drained before the pause: nothing was held back"
        configure("email", QueueChange(paused=False))
        wait_until(
            lambda: _count(queue_app, "email", Status.DONE) == 400,
            timeout=60,
            what="the resumed queue to drain",
        )
    finally:
        for proc in procs:
            proc.stop()


def test_concurrency_caps_the_fleet_exactly(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    queue_app.container.configure_queue()("email", QueueChange(concurrency=3))
    env = _env(store_env, ledger, VESPER_QUEUES="email=4")
    procs = [WorkerProcess(env, tmp_path / f"w{i}.log", app=f"{APPS}:mail") for i in range(3)]
    try:
        queue_app.enqueue_many(
            [JobRequest(type="email", queue="email", payload={"sleep": 0.05}) for _ in range(300)]
        )
        wait_until(
            lambda: _count(queue_app, "email", Status.DONE) == 300, timeout=120, what="the drain"
        )
        entries = read_ledger(ledger)
        assert _overlap(entries) == 3
    finally:
        for proc in procs:
            proc.stop()


def test_key_concurrency_runs_each_key_serially_and_keys_interleave(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    queue_app.container.configure_queue()("email", QueueChange(key_concurrency=1))
    env = _env(store_env, ledger, VESPER_QUEUES="email=4")
    procs = [WorkerProcess(env, tmp_path / f"w{i}.log", app=f"{APPS}:mail") for i in range(3)]
    try:
        # key t0 first and most: a busy key must not starve the others
        keys = ["t0"] * 20 + [f"t{i % 20}" for i in range(80)]
        queue_app.enqueue_many(
            [
                JobRequest(type="email", queue="email", payload={"sleep": 0.02}, concurrency_key=k)
                for k in keys
            ]
        )
        wait_until(
            lambda: _count(queue_app, "email", Status.DONE) == len(keys),
            timeout=120,
            what="the drain",
        )
        entries = read_ledger(ledger)
        for key in {e["key"] for e in entries}:
            assert _overlap(e for e in entries if e["key"] == key) == 1, f"key {key} overlapped"
        first = sorted(starts(entries), key=lambda e: e["t"])[:20]
        assert len({e["key"] for e in first}) >= 10, "keys did not interleave"
    finally:
        for proc in procs:
            proc.stop()


def _window_peak(moments: list[float], width: float) -> int:
    """The most moments in any half-open window of `width` seconds."""
    moments = sorted(moments)
    peak = start = 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= width:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def test_rate_holds_in_every_sliding_second(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    queue_app.container.configure_queue()("email", QueueChange(rate="50/1s"))
    env = _env(store_env, ledger, VESPER_QUEUES="email=8")
    procs = [WorkerProcess(env, tmp_path / f"w{i}.log", app=f"{APPS}:mail") for i in range(3)]
    try:
        jobs = queue_app.enqueue_many(
            [JobRequest(type="email", queue="email") for _ in range(1000)]
        )
        fleet = queue_app.container.get_fleet()
        wait_until(lambda: len(fleet().processes) == 3, timeout=30, what="three processes")
        time.sleep(10)
        get = queue_app.container.get_job()
        started: list[JobRecord] = [j for j in map(get, (j.id for j in jobs)) if j.started_at]
        moments = [j.started_at.timestamp() for j in started if j.started_at is not None]
        assert 300 <= len(moments) <= 560, f"{len(moments)} claims in about 10 s at 50/s"
        # the claims the store dated: a sliding window, not only whole seconds
        assert _window_peak(moments, 1.0) <= 50
    finally:
        for proc in procs:
            proc.stop()


def test_aging_lifts_a_waiting_job_above_a_steady_stream(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    """One slot; priority-5 jobs of 50 ms arrive as fast as they run (each waits little,
    so ages little): the priority-0 job rises to 5 after about 5 s and, older, wins."""
    ledger = tmp_path / "ledger"
    queue_app.container.configure_queue()("email", QueueChange(aging="1s"))
    proc = WorkerProcess(
        _env(store_env, ledger, VESPER_QUEUES="email=1"), tmp_path / "w.log", app=f"{APPS}:mail"
    )
    try:
        fleet = queue_app.container.get_fleet()
        wait_until(lambda: fleet().processes, timeout=30, what="the worker to register")
        stream = [JobRequest(type="email", queue="email", priority=5, payload={"sleep": 0.05})]
        queue_app.enqueue_many(stream * 5)
        low = queue_app.enqueue("email", queue="email", priority=0)
        get = queue_app.container.get_job()
        ends = time.monotonic() + 15  # bounded: the stream runs at most this long
        while time.monotonic() < ends and get(low.id).status is Status.PENDING:
            if _count(queue_app, "email", Status.PENDING) < 6:
                queue_app.enqueue_many(stream * 2)
            time.sleep(0.05)
        done = wait_until(lambda: (j := get(low.id)).started_at and j, timeout=10, what="start")
        assert done.started_at is not None
        waited = done.started_at - low.run_at
        assert timedelta(seconds=4) <= waited < timedelta(seconds=7.5), f"waited {waited}"
        assert done.priority == 0
    finally:
        proc.stop()

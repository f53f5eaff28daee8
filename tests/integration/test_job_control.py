"""Stopping running jobs, snoozing, retry-after and a consumer's retry policy, with real
`vesper worker` processes on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.apps.control import app as control_app
from tests.integration.harness import FAST, WorkerProcess, read_ledger, wait_until
from vesper.domain.states import Status
from vesper.entrypoints.app import App

pytestmark = pytest.mark.slow

APP = "tests.integration.apps.control:app"
HEARTBEAT = 0.5  # FAST's VESPER_HEARTBEAT


def events(ledger: Path, job_id: object, event: str) -> list[dict[str, Any]]:
    return [e for e in read_ledger(ledger) if e["job_id"] == str(job_id) and e["event"] == event]


def test_running_jobs_are_cancelled_snoozed_and_retried_by_policy(
    queue_app: App, store_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = {**store_env, **FAST, "WORKERS": "8", "VESPER_TEST_LEDGER": str(ledger)}
    # a producer that declares the consumers: their max_retries apply to its jobs
    producer = App(store_env)
    producer.consumers = control_app.consumers
    get = queue_app.container.get_job()
    cancel = queue_app.container.cancel_job()
    worker = WorkerProcess(env, tmp_path / "worker.log", app=APP)
    try:
        slow = [producer.enqueue("sleep_async"), producer.enqueue("poll_sync")]
        wait_until(
            lambda: all(events(ledger, j.id, "start") for j in slow),
            timeout=30,
            what="both slow consumers to start",
        )
        for job in slow:
            requested = cancel(job.id)
            assert requested.status is Status.PROCESSING
            assert requested.cancel_requested_at is not None
        ended = wait_until(
            lambda: (
                [j for j in map(get, (s.id for s in slow)) if j.status is Status.CANCELLED]
                if all(get(s.id).status is Status.CANCELLED for s in slow)
                else None
            ),
            timeout=15,
            what="both slow jobs to end cancelled",
        )
        for job in ended:
            assert job.cancel_requested_at is not None
            assert job.finished_at is not None
            # the store ended it at the worker's next renewal: within one heartbeat
            # (plus the renewal's own time), on the store's clock
            assert (job.finished_at - job.cancel_requested_at).total_seconds() <= HEARTBEAT + 1
        stops = {
            j.id: wait_until(
                lambda j=j: events(ledger, j.id, "stopped"), timeout=15, what="consumer stop"
            )[0]
            for j in slow
        }
        assert stops[slow[0].id]["reason"] == "async cancelled"
        assert stops[slow[1].id]["reason"] == "cancelled"  # job.stopping, with its reason
        for job in ended:  # within one heartbeat + 1 s of the request (the acceptance)
            assert job.cancel_requested_at is not None
            stopped_at = stops[job.id]["t"]
            assert stopped_at - job.cancel_requested_at.timestamp() <= HEARTBEAT + 1, stops
        assert not any(events(ledger, j.id, "end") for j in slow)

        snoozer = producer.enqueue("snoozer")
        later = producer.enqueue("retry_after")
        picky = {
            kind: producer.enqueue("picky", {"raise": kind})
            for kind in ("transient", "fatal", "other")
        }
        explicit = producer.enqueue("picky", {"raise": "transient"}, max_retries=0)
        assert picky["transient"].max_retries == 1  # the consumer's default
        assert explicit.max_retries == 0  # the job's own wins
        finished = (Status.DONE, Status.DLQ)
        jobs = [snoozer, later, *picky.values(), explicit]
        wait_until(
            lambda: all(get(j.id).status in finished for j in jobs),
            timeout=30,
            what="the snoozed, retried and policy jobs to end",
        )
        snoozed = get(snoozer.id)
        assert (snoozed.status, snoozed.snoozes, snoozed.attempts, snoozed.retries) == (
            Status.DONE,
            2,
            1,
            0,
        )
        assert len(events(ledger, snoozer.id, "start")) == 3
        retried = get(later.id)
        assert (retried.status, retried.retries, retried.attempts) == (Status.DONE, 1, 2)
        first, second = (e["t"] for e in events(ledger, later.id, "start"))
        assert second - first >= 1.5  # RetryAfter's delay, not the 200 ms backoff
        outcomes = {kind: get(j.id) for kind, j in picky.items()}
        assert {k: (j.status, j.attempts) for k, j in outcomes.items()} == {
            "transient": (Status.DLQ, 2),  # retried once: max_retries=1
            "fatal": (Status.DLQ, 1),  # discard_on
            "other": (Status.DLQ, 1),  # not in retry_on
        }
        assert (get(explicit.id).status, get(explicit.id).attempts) == (Status.DLQ, 1)
    finally:
        worker.stop()
        producer.close()

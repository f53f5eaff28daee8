"""A job's whole life, end to end on SQLite and PostgreSQL: the consumer's result
stored (or refused), waiting for a job over HTTP and in Python, deleting a finished
job, and the workers' pruner deleting what is past its retention."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

import vesper
from vesper.domain.errors import JobNotFound
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.http import create_app
from vesper.entrypoints.service import build_runner

FAST = {
    "VESPER_LEASE": "5s",
    "VESPER_HEARTBEAT": "200ms",
    "VESPER_POLL_INTERVAL": "100ms",
    "VESPER_MAX_RESULT": "1KiB",
}


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[App]:
    application = App({**store_env, **FAST})

    @application.consumer("answer")
    def answer(job: vesper.Job) -> Any:
        return job.payload.get("value")

    @application.consumer("unstorable")
    def unstorable(job: vesper.Job) -> Any:
        return {"a set": {1, 2}}

    @application.consumer("huge")
    def huge(job: vesper.Job) -> Any:
        return "x" * 2000

    @application.consumer("slow")
    async def slow(job: vesper.Job) -> Any:
        await asyncio.sleep(float(job.payload["seconds"]))
        return {"slept": job.payload["seconds"]}

    yield application
    application.close()


class Workers:
    """The app's worker runner on a thread of its own until the end of the block."""

    def __init__(self, app: App) -> None:
        self.runner = build_runner(app)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.runner.run()), daemon=True)

    def __enter__(self) -> Workers:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.runner.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_results_are_stored_and_unstorable_ones_go_to_dlq(app: App) -> None:
    ok = app.enqueue("answer", {"value": {"n": 1}})
    nothing = app.enqueue("answer", {})
    unstorable = app.enqueue("unstorable", max_retries=3)
    huge = app.enqueue("huge", max_retries=3)
    with Workers(app):
        assert app.wait(ok.id, timeout=20).result == {"n": 1}
        assert app.wait(nothing.id, timeout=20).result is None
        bad = app.wait(unstorable.id, timeout=20)
        big = app.wait(huge.id, timeout=20)
    assert (bad.status, bad.attempts, bad.result) == (Status.DLQ, 1, None)  # no retry
    assert "cannot be encoded as JSON" in bad.error
    assert "set is not JSON serializable" in bad.error
    assert (big.status, big.attempts) == (Status.DLQ, 1)
    assert "2002 bytes of JSON, over the limit of 1024 (VESPER_MAX_RESULT)" in big.error


def test_http_shows_results_waits_and_deletes(app: App) -> None:
    with TestClient(create_app(app.container)) as client, Workers(app):
        job_id = client.post("/jobs", json={"type": "slow", "payload": {"seconds": 0.5}}).json()[
            "job_id"
        ]
        started = time.monotonic()
        waited = client.get(f"/jobs/{job_id}", params={"wait": "20s"})
        assert waited.status_code == 200, waited.text
        assert waited.json()["status"] == "done"
        assert waited.json()["result"] == {"slept": 0.5}
        assert time.monotonic() - started < 15  # answered when done, not at the wait's end
        listed = client.get("/jobs", params={"status": "done"}).json()["jobs"]
        assert [j["result"] for j in listed if j["job_id"] == job_id] == [{"slept": 0.5}]

        # a wait that ends first answers 200 with the job as it is
        pending = client.post("/jobs", json={"type": "nobody serves this"}).json()["job_id"]
        short = client.get(f"/jobs/{pending}", params={"wait": "300ms"})
        assert (short.status_code, short.json()["status"]) == (200, "pending")
        assert client.get(f"/jobs/{pending}", params={"wait": "61s"}).status_code == 400
        assert client.get(f"/jobs/{pending}", params={"wait": "soon"}).status_code == 400

        assert client.delete(f"/jobs/{pending}").status_code == 409
        deleted = client.delete(f"/jobs/{job_id}")
        assert (deleted.status_code, deleted.json()["job_id"]) == (200, job_id)
        assert client.get(f"/jobs/{job_id}").status_code == 404
        assert client.delete(f"/jobs/{job_id}").status_code == 404


def test_app_wait_times_out_and_knows_unknown_jobs(app: App) -> None:
    job = app.enqueue("nobody serves this")
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.2s"):
        app.wait(job.id, timeout=0.2)
    with pytest.raises(JobNotFound):
        app.wait("00000000-0000-4000-8000-000000000000", timeout=0.2)


def test_many_concurrent_waiters_share_one_reader(app: App) -> None:
    jobs = [app.enqueue("answer", {"value": i}) for i in range(200)]
    answers: dict[int, Any] = {}

    def wait(index: int) -> None:
        answers[index] = app.wait(jobs[index].id, timeout=30).result

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    with Workers(app):
        for thread in threads:
            thread.join(timeout=40)
    assert answers == {i: i for i in range(len(jobs))}
    waits = app.container.shared_job_waits()
    assert waits.reads < 20 * len(jobs)  # reads are shared, not one per waiter and round


def test_the_workers_prune_finished_jobs_past_their_retention(
    store_env: dict[str, str],
) -> None:
    env = {
        **store_env,
        **FAST,
        "VESPER_RETAIN_DONE": "0s",
        "VESPER_RETAIN_DLQ": "forever",
        "VESPER_PRUNE_INTERVAL": "200ms",
    }
    app = App(env)

    @app.consumer("ok")
    def ok(job: vesper.Job) -> None:
        if job.payload.get("fail"):
            raise vesper.NonRetryable("no")

    try:
        done = [app.enqueue("ok", idempotency_key=f"k{i}") for i in range(30)]
        dead = app.enqueue("ok", {"fail": True})
        waiting = app.enqueue("nobody serves this")
        with Workers(app):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    app.container.get_job()(done[-1].id)
                except JobNotFound:
                    break
                time.sleep(0.1)
        get = app.container.get_job()
        for job in done:
            with pytest.raises(JobNotFound):
                get(job.id)
        assert get(dead.id).status is Status.DLQ  # kept for ever
        assert get(waiting.id).status is Status.PENDING  # never pruned
        again = app.enqueue("ok", {"another": "body"}, idempotency_key="k0")
        assert again.id != done[0].id  # the key is free once its job is gone
    finally:
        app.close()

"""A worker claims only the job types it has consumers for (the in-memory store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import vesper
from vesper.application.consumers import Consumer, Consumers
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.service import build_runner


@pytest.fixture
def app() -> Iterator[App]:
    application = App({"VESPER_STORAGE": "memory", "WORKERS": "2"})
    yield application
    application.close()


def run_until_idle(app: App) -> None:
    asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 30))


def _noop(job: vesper.Job) -> None:
    del job


def test_claim_types_are_the_named_types_or_none_with_a_catch_all() -> None:
    consumers = Consumers()
    consumers.add("b", Consumer(_noop))
    consumers.add("a", Consumer(_noop))
    assert consumers.claim_types == ("a", "b")
    consumers.add(None, Consumer(_noop))
    assert consumers.claim_types is None


def test_a_worker_leaves_the_types_it_has_no_consumer_for_pending(app: App) -> None:
    ran: list[str] = []

    @app.consumer("a")
    def a(job: vesper.Job) -> None:
        ran.append(job.type)

    # interleaved: a claim that ignored the types would take a "b" in every batch, the
    # first claim's (claim_jobs) and the next ones' (complete_and_claim, as "a"s finish)
    submitted = [app.enqueue(kind, max_retries=0) for _ in range(12) for kind in ("a", "b")]
    run_until_idle(app)
    get = app.container.get_job()
    after = [get(job.id) for job in submitted]
    assert ran == ["a"] * 12
    assert all(job.status is Status.DONE for job in after if job.type == "a")
    # never claimed: pending, no attempt counted, the row as it was submitted
    assert [job for job in after if job.type == "b"] == [j for j in submitted if j.type == "b"]
    assert app.container.get_stats()().by_status[Status.PENDING] == 12


def test_a_catch_all_consumer_takes_every_other_type(app: App) -> None:
    ran: list[tuple[str, str]] = []

    @app.consumer("a")
    def a(job: vesper.Job) -> None:
        ran.append(("a", job.type))

    @app.consumer
    def anything(job: vesper.Job) -> None:
        ran.append(("catch-all", job.type))

    for kind in ("a", "b", "c") * 3:
        app.enqueue(kind)
    run_until_idle(app)
    assert sorted(ran) == sorted([("a", "a"), ("catch-all", "b"), ("catch-all", "c")] * 3)
    assert app.container.get_stats()().by_status[Status.DONE] == 9

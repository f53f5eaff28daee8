"""The worker runner in this process, on the in-memory store: outcomes, time limits,
lease loss, shutdown and wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import uuid4

import attrs
import pytest

import vesper
from vesper.application.execution import Outcome, lease_of
from vesper.application.worker import Attempt
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.service import build_runner
from vesper.entrypoints.worker import WorkerRunner

FAST = {
    "VESPER_STORAGE": "memory",
    "VESPER_LEASE": "2s",
    "VESPER_HEARTBEAT": "100ms",
    "VESPER_POLL_INTERVAL": "100ms",
    "VESPER_RETRY_BASE": "50ms",
    "VESPER_RETRY_CAP": "100ms",
}


@pytest.fixture
def app() -> Iterator[App]:
    application = App(FAST)
    yield application
    application.close()


class Background:
    """A runner on its own thread and event loop, stopped and joined at the end."""

    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.runner.run())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.runner.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the runner did not stop"
        assert self.error is None, self.error


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def run_until_idle(app: App) -> None:
    asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 30))


@pytest.fixture
def slow_retry_app() -> Iterator[App]:
    """FAST, but a failed job's retry waits a minute: run_until_idle returns before it
    (a 50 ms backoff could pass on a loaded machine before the runner found itself idle,
    and the retry would run)."""
    application = App({**FAST, "VESPER_RETRY_BASE": "60s", "VESPER_RETRY_CAP": "60s"})
    yield application
    application.close()


def test_success_failure_nonretryable_outcomes_and_a_type_left_pending(
    slow_retry_app: App,
) -> None:
    app = slow_retry_app

    @app.consumer("ok")
    def ok(job: vesper.Job) -> None:
        assert job.payload == {"x": 1}

    @app.consumer("boom")
    async def boom(job: vesper.Job) -> None:
        raise ValueError("bad input")

    @app.consumer("fatal")
    def fatal(job: vesper.Job) -> None:
        raise vesper.NonRetryable("cannot ever work")

    ok_job = app.enqueue("ok", {"x": 1})
    boom_job = app.enqueue("boom", max_retries=1)
    fatal_job = app.enqueue("fatal", max_retries=5)
    orphan = app.enqueue("nobody-handles-this", max_retries=0)
    run_until_idle(app)
    get = app.container.get_job()
    assert get(ok_job.id).status is Status.DONE
    after_first = get(boom_job.id)
    assert after_first.status is Status.FAILED
    assert after_first.retries == 1
    assert after_first.error == "ValueError: bad input"
    assert get(fatal_job.id).status is Status.DLQ
    assert get(fatal_job.id).error == "NonRetryable: cannot ever work"
    # no consumer here: never claimed, it waits for a process that has one
    assert get(orphan.id) == orphan


def test_per_job_time_limit_fails_the_attempt_with_a_timeout_error(app: App) -> None:
    @app.consumer("slow", timeout=0.2)
    async def slow(job: vesper.Job) -> None:
        await asyncio.sleep(10)

    @app.consumer("slow_sync")
    def slow_sync(job: vesper.Job) -> None:
        job.wait_stopping(10)

    by_type = app.enqueue("slow", max_retries=0)
    by_job = app.enqueue("slow_sync", max_retries=0, timeout=0.2)
    started = time.monotonic()
    run_until_idle(app)
    assert time.monotonic() - started < 8
    for job in (by_type, by_job):
        failed = app.container.get_job()(job.id)
        assert failed.status is Status.DLQ
        assert failed.error.startswith(
            "TimeoutError: the job ran longer than its time limit of 0.2s"
        )


def test_a_consumers_own_timeout_error_is_its_failure_not_the_time_limit(app: App) -> None:
    """A TimeoutError the consumer raises (a client library's) within its time limit is
    an ordinary failure, named as raised: only the worker's own limit reads "ran longer
    than its time limit"."""

    @app.consumer("calls_out_async", timeout=30)
    async def calls_out_async(job: vesper.Job) -> None:
        raise TimeoutError("upstream took too long")

    @app.consumer("calls_out_sync", timeout=30)
    def calls_out_sync(job: vesper.Job) -> None:
        raise TimeoutError("upstream took too long")

    jobs = [app.enqueue(kind, max_retries=0) for kind in ("calls_out_async", "calls_out_sync")]
    run_until_idle(app)
    for job in jobs:
        failed = app.container.get_job()(job.id)
        assert failed.status is Status.DLQ
        assert failed.error == "TimeoutError: upstream took too long"


def test_a_sync_consumer_past_its_time_limit_keeps_its_slot_until_its_thread_returns() -> None:
    app = App({**FAST, "WORKERS": "1"})
    intervals: list[tuple[str, float, float]] = []
    release = threading.Event()

    @app.consumer("stubborn", timeout=0.1)
    def stubborn(job: vesper.Job) -> None:
        began = time.monotonic()
        release.wait(10)  # ignores job.stopping: Python cannot stop the thread
        intervals.append(("stubborn", began, time.monotonic()))

    @app.consumer("next")
    def following(job: vesper.Job) -> None:
        intervals.append(("next", time.monotonic(), time.monotonic()))

    try:
        first = app.enqueue("stubborn", max_retries=0, priority=10)
        second = app.enqueue("next")
        runner = build_runner(app)
        with Background(runner):
            wait_for(lambda: app.container.get_job()(first.id).status is Status.DLQ)
            time.sleep(0.3)  # the slot is still taken: the next job must wait
            assert app.container.get_job()(second.id).status is Status.PENDING
            assert runner.busy == 1
            release.set()
            wait_for(lambda: app.container.get_job()(second.id).status is Status.DONE)
            assert runner.busy == 0
        (_, _, stubborn_ended), (_, next_began, _) = sorted(intervals, key=lambda i: i[1])
        assert next_began >= stubborn_ended, "two consumers ran at once on one slot"
    finally:
        release.set()
        app.close()


def test_lost_lease_cancels_an_async_consumer_and_records_nothing(app: App) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    @app.consumer("long")
    async def long(job: vesper.Job) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = app.enqueue("long", max_retries=0)  # expiry sends it to dlq: no second attempt
    runner = build_runner(app)
    with Background(runner):
        assert started.wait(10)
        # Another process found this worker dead and ended its leases.
        app.container.job_repository().expire(worker_ids=[runner.identity.id])
        assert cancelled.wait(10), "the consumer was not cancelled after its lease was lost"
    after = app.container.get_job()(job.id)
    assert after.status is Status.DLQ  # as the reaper left it: nothing recorded on top
    assert after.error.startswith("lease expired")


def test_lost_lease_tells_a_sync_consumer_through_the_job(app: App) -> None:
    started = threading.Event()
    saw_stop: list[str] = []

    @app.consumer("long")
    def long(job: vesper.Job) -> None:
        started.set()
        if job.wait_stopping(30):
            saw_stop.append(job.stop_reason)

    job = app.enqueue("long", max_retries=0)
    runner = build_runner(app)
    with Background(runner):
        assert started.wait(10)
        app.container.job_repository().expire(worker_ids=[runner.identity.id])
        wait_for(lambda: saw_stop)
    assert saw_stop == ["lease lost"]
    assert app.container.get_job()(job.id).status is Status.DLQ


def test_stop_waits_for_running_jobs_within_the_grace_period(app: App) -> None:
    finished = threading.Event()

    @app.consumer("work")
    async def work(job: vesper.Job) -> None:
        await asyncio.sleep(0.5)
        finished.set()

    job = app.enqueue("work")
    runner = build_runner(app)
    with Background(runner):
        wait_for(lambda: runner.busy == 1)
    assert finished.is_set()
    assert app.container.get_job()(job.id).status is Status.DONE
    assert app.container.get_fleet()().processes == ()


def test_enqueue_in_the_same_process_wakes_an_idle_worker_before_the_poll(app: App) -> None:
    slow_poll = App({**FAST, "VESPER_POLL_INTERVAL": "60s"})
    slow_poll._container = app.container  # the same store, a 60 s poll interval
    ran = threading.Event()

    @slow_poll.consumer("ping")
    def ping(job: vesper.Job) -> None:
        ran.set()

    runner = build_runner(slow_poll)
    unsubscribe = app.container.job_signal().subscribe(runner.wake)
    try:
        with Background(runner):
            wait_for(lambda: runner._loop is not None)
            time.sleep(0.3)  # the runner is idle, waiting for its 60 s poll
            app.enqueue("ping")
            assert ran.wait(10), "the worker waited for its poll instead of waking"
    finally:
        unsubscribe()


def test_a_job_that_finished_during_the_renewal_is_not_reported_lost(app: App) -> None:
    @app.consumer("quick")
    def quick(job: vesper.Job) -> None:
        return None

    app.enqueue("quick")
    runner = build_runner(app)
    jobs = app.container.job_repository()

    async def scenario() -> tuple[Attempt, Attempt]:
        [record] = jobs.claim(worker_id=runner.identity.id, limit=1, lease=timedelta(seconds=2))
        jobs.complete([lease_of(record)])  # its outcome was recorded: the lease is over
        app.enqueue("quick")
        [stolen] = jobs.claim(worker_id="elsewhere", limit=1, lease=timedelta(seconds=2))
        assert stolen.lease is not None
        mine = attrs.evolve(stolen, lease=attrs.evolve(stolen.lease, token=uuid4()))  # stale
        core = runner.core
        request = core.claim_request()
        assert request is not None
        # a consumer that returned, and one that is still running, lease lost too
        finished, running = core.claimed(request, [record, mine])
        core.start(finished)
        core.start(running)
        assert core.returned(finished, Outcome(job=record)) is not None
        await runner.heartbeat.beat()
        return finished, running

    finished, running = asyncio.run(scenario())
    assert finished.abandon_reason is None, "a job that finished is not a lost lease"
    assert running.abandon_reason == "lease lost"


def test_a_stalled_reap_does_not_hold_up_heartbeats_or_renewals(app: App) -> None:
    """Reaping and lease expiry wait for the main pool, which a busy process may have
    exhausted: the heartbeat and the renewals of running jobs go on meanwhile (R14)."""
    release = threading.Event()
    beats: list[float] = []
    renewals: list[float] = []

    @app.consumer("long")
    def long(job: vesper.Job) -> None:
        job.wait_stopping(1.5)

    uses = app.container.worker_use_cases()

    def stalled_reap() -> list[Any]:
        release.wait(10)
        return []

    def beat(identity: Any) -> bool:
        beats.append(time.monotonic())
        return uses.heartbeat_worker(identity)

    class Renew:
        """The use case, with its renewals timed (the heartbeat calls `check`)."""

        def check(self, refs: Any) -> Any:
            renewals.append(time.monotonic())
            return uses.renew_leases.check(refs)

    renew = Renew()

    runner = app.container.worker_runner(
        consumers=app.consumers,
        uses=attrs.evolve(
            uses, reap_dead_workers=stalled_reap, heartbeat_worker=beat, renew_leases=renew
        ),
    )
    app.enqueue("long")
    try:
        with Background(runner):
            wait_for(lambda: renewals, timeout=10)
            start = time.monotonic()
            time.sleep(1.0)
            # heartbeat 100 ms: about 10 beats in the second, reaping stalled all along
            assert sum(1 for t in beats if t >= start) >= 5
            assert sum(1 for t in renewals if t >= start) >= 5
            release.set()
    finally:
        release.set()


def test_a_claim_after_a_silence_of_half_dead_after_heartbeats_first(app: App) -> None:
    """After an outage longer than dead-after, another process may reap this one as soon
    as the database is back and end the leases of whatever it claims before its next
    heartbeat (R5 at full scale: jobs run twice). So a claim is preceded by a heartbeat
    when the store has not heard from the process for half of dead-after, and only then."""
    calls: list[str] = []

    @app.consumer("x")
    def x(job: vesper.Job) -> None:
        pass

    uses = app.container.worker_use_cases()

    def beat(identity: Any) -> bool:
        calls.append("beat")
        return uses.heartbeat_worker(identity)

    def claim(*args: Any, **kwargs: Any) -> Any:
        calls.append("claim")
        return uses.claim_jobs(*args, **kwargs)

    runner = app.container.worker_runner(
        consumers=app.consumers,
        uses=attrs.evolve(uses, heartbeat_worker=beat, claim_jobs=claim),
    )
    uses.register_worker(runner.identity)
    dead_after = app.settings.policies.dead_after.total_seconds()

    async def claims() -> None:
        await runner._claim(())  # heard from just now (registered): no heartbeat
        runner.heartbeat.said_alive_at -= dead_after / 2 + 0.1  # heartbeats failed meanwhile
        await runner._claim(())  # a heartbeat first
        await runner._claim(())  # heard from again: none

    asyncio.run(claims())
    assert calls == ["claim", "beat", "claim", "claim"]


def test_a_pause_between_the_claim_and_the_start_runs_nothing_on_the_stale_lease(
    app: App,
) -> None:
    """Found by the soak (seed 21): a worker paused after its claim's answer and before
    its consumers began resumed past the lease, when another worker had run the jobs,
    and ran them again. Here the runner's clock jumps past the lease (2 s) right after
    the answer: the first attempt runs no consumer, the job runs once, on a later claim."""
    ran_at_attempt: list[int] = []

    @app.consumer("once")
    def once(job: vesper.Job) -> None:
        ran_at_attempt.append(job.attempt)

    job = app.enqueue("once")
    runner = build_runner(app)
    core = runner.core
    paused = [0.0]
    core.clock = lambda: time.monotonic() + paused[0]
    answered = core.claimed

    def then_paused(request: Any, records: Any) -> list[Attempt]:
        attempts = answered(request, records)
        if records and not paused[0]:
            paused[0] = 2.5  # the store's lease still runs: only a deadline check stops it
        return attempts

    core.claimed = then_paused  # type: ignore[method-assign]
    get_job = app.container.get_job()
    with Background(runner):
        wait_for(lambda: get_job(job.id).status is Status.DONE)
    assert ran_at_attempt == [2]
    assert get_job(job.id).attempts == 2


def test_jobs_claimed_by_an_outcome_write_in_flight_at_the_stop_get_the_grace() -> None:
    """Found by the soak (seed 7): SIGTERM came while an outcome's write (which claims
    for the free slot) was in flight; its job started after the shutdown had listed the
    running ones, and was released as soon as those ended: it ran twice."""
    app = App({**FAST, "WORKERS": "1"})
    ran: list[str] = []

    @app.consumer("work")
    def work(job: vesper.Job) -> None:
        ran.append(job.record.payload["name"])
        if job.record.payload["name"] == "second":
            time.sleep(0.5)  # still running when the first job's attempt ends

    uses = app.container.worker_use_cases()
    runners: list[WorkerRunner] = []

    def stopped_meanwhile(*args: Any) -> Any:
        if not runners[0].core.stopping:
            runners[0].stop()
            time.sleep(0.3)  # the shutdown lists the running jobs meanwhile
        return uses.record_and_claim(*args)

    runner = app.container.worker_runner(
        consumers=app.consumers, uses=attrs.evolve(uses, record_and_claim=stopped_meanwhile)
    )
    runners.append(runner)
    try:
        first = app.enqueue("work", {"name": "first"})
        second = app.enqueue("work", {"name": "second"})
        thread = Background(runner)
        thread.thread.start()
        thread.thread.join(timeout=30)
        assert not thread.thread.is_alive(), "the runner did not stop"
        assert thread.error is None, thread.error
        get_job = app.container.get_job()
        assert ran == ["first", "second"]
        assert get_job(first.id).status is Status.DONE
        assert get_job(second.id).status is Status.DONE  # not released after it ran
    finally:
        app.close()


@attrs.frozen
class HeldHeartbeat:
    """The worker's heartbeat use case, held once armed until the process deregistered
    (or `hold` seconds passed): a heartbeat in flight when the runner stops."""

    inner: Any
    armed: threading.Event
    holding: threading.Event
    deregistering: threading.Event
    returned: threading.Event
    hold: float

    def __call__(self, process: Any) -> bool:
        if not self.armed.is_set():
            result: bool = self.inner(process)
            return result
        self.holding.set()
        self.deregistering.wait(self.hold)
        try:
            result = self.inner(process)
        finally:
            self.returned.set()
        return result


@attrs.frozen
class SeenDeregister:
    inner: Any
    deregistering: threading.Event

    def __call__(self, worker_id: str) -> None:
        self.inner(worker_id)
        self.deregistering.set()


def test_a_heartbeat_in_flight_at_stop_does_not_register_the_process_again(app: App) -> None:
    """The beat lane has several threads: deregistering must wait for a heartbeat that
    was in flight when the runner stopped, or that heartbeat finds the process gone and
    registers it again (a ghost in the fleet view until reaped)."""
    runner = build_runner(app)
    armed, holding, deregistering, returned = (threading.Event() for _ in range(4))
    uses = attrs.evolve(
        runner.uses,
        heartbeat_worker=HeldHeartbeat(
            runner.uses.heartbeat_worker, armed, holding, deregistering, returned, hold=1.0
        ),
        deregister_worker=SeenDeregister(runner.uses.deregister_worker, deregistering),
    )
    runner.uses = runner.heartbeat.uses = uses
    with Background(runner):
        wait_for(lambda: app.container.get_fleet()().processes != ())
        armed.set()
        assert holding.wait(10), "no heartbeat within 10 s (heartbeat 100 ms)"
    assert deregistering.is_set()
    assert returned.wait(10)  # the held heartbeat ended (before deregistering, or after)
    assert app.container.get_fleet()().processes == ()


@attrs.frozen
class HeldCall:
    """A use case held once armed for `hold` seconds: a store call in flight when the
    runner stops."""

    inner: Any
    armed: threading.Event
    holding: threading.Event
    returned: threading.Event
    hold: float

    def __call__(self, *args: Any) -> Any:
        if not self.armed.is_set():
            return self.inner(*args)
        self.holding.set()
        time.sleep(self.hold)
        try:
            return self.inner(*args)
        finally:
            self.returned.set()


def test_no_store_call_of_a_stopped_runner_runs_on_after_it_returns(app: App) -> None:
    """The heartbeat's maintenance round (reaping, on the main lane) is cancelled at the
    stop; its store call runs on in its thread, and the runner waits for it: a store
    closed after the runner returned would otherwise find a connection in use."""
    runner = build_runner(app)
    armed, holding, returned = (threading.Event() for _ in range(3))
    uses = attrs.evolve(
        runner.uses,
        reap_dead_workers=HeldCall(runner.uses.reap_dead_workers, armed, holding, returned, 0.5),
    )
    runner.uses = runner.heartbeat.uses = uses
    with Background(runner):
        wait_for(lambda: app.container.get_fleet()().processes != ())
        armed.set()
        assert holding.wait(10), "no maintenance round within 10 s (heartbeat 100 ms)"
    assert returned.is_set(), "the runner returned while its reaping call still ran"

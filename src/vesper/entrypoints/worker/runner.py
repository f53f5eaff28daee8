"""The worker runner: one per process, with `concurrency` job slots.

A thin asyncio driver around the worker core (`vesper.application.worker`), which holds
the rules: slots, attempts, local lease deadlines, which leases to renew, what to claim,
what to release at shutdown. The runner moves data between the core and the outside:
store calls through two lanes, consumers on threads or tasks, timers. It claims in
batches of up to its free slots, wakes on a notification (a local producer, PostgreSQL
NOTIFY) or after a jittered poll interval, heartbeats and renews leases on a lane of
their own, and shuts down gracefully: stop claiming, let running jobs finish within the
grace period, release the rest, deregister.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

from opentelemetry import trace
from opentelemetry.trace import Tracer

from vesper.application.consumers import Consumers
from vesper.application.execution import Outcome
from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.periodic import PeriodicScheduler
from vesper.application.policies import Policies
from vesper.application.worker import Attempt, ClaimRequest, WorkerCore
from vesper.application.worker.core import CANCELLED
from vesper.application.worker_settings import WorkerSettings
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import JobRecord
from vesper.domain.states import Status
from vesper.entrypoints.logs import job_fields
from vesper.entrypoints.tracing import job_span
from vesper.entrypoints.worker.attempt import ConsumerCall, run_attempt
from vesper.entrypoints.worker.heartbeat import Heartbeat
from vesper.entrypoints.worker.lanes import Lane
from vesper.entrypoints.worker.periodic import SchedulerLoop
from vesper.entrypoints.worker.pruner import Pruner
from vesper.entrypoints.worker.recorder import OutcomeRecorder
from vesper.entrypoints.worker.report import Report
from vesper.entrypoints.worker.uses import WorkerUseCases
from vesper.entrypoints.worker.waits import (
    MAX_ERROR_BACKOFF,
    StoppedWaiting,
    StoreWait,
    retrying,
    sleep_unless,
    until_stopped,
)

__all__ = ["StoreWait", "WorkerRunner", "WorkerUseCases"]

log = logging.getLogger("vesper.worker")

# The shutdown's store calls (releasing unfinished jobs, deregistering) are retried until
# the grace period ends, and for at least this long when running jobs used it up: a
# connection the server cut just before the signal must not leave the process in the
# fleet, or its jobs processing, until they are reaped.
MIN_SHUTDOWN_RETRY = 5.0
# How long the end of a run waits for the store calls of its cancelled loops (maintenance,
# heartbeat, schedules, pruning) to return: longer, the store does not answer, and the
# calls are left to their timeouts.
SETTLE_S = 10.0


def new_identity(
    concurrency: int,
    queues: Mapping[str, int] | None = None,
    types: tuple[str, ...] | None = None,
) -> WorkerProcess:
    machine = socket.gethostname()
    now = datetime.now(UTC)
    return WorkerProcess(
        id=f"{machine}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        machine=machine,
        pid=os.getpid(),
        concurrency=concurrency,
        started_at=now,
        last_heartbeat=now,
        queues=dict(queues) if queues is not None else None,
        types=types,
    )


def _served(queues: Mapping[str, int] | None) -> str:
    if queues is None:
        return "all"
    return ",".join(f"{name}={slots}" for name, slots in queues.items())


class WorkerRunner:
    """Runs consumers for claimed jobs until `stop()` is called (or the queue is idle).

    Args:
        main_lane: claims, outcomes, releases and maintenance (reaping, lease expiry,
            the fleet view).
        beat_lane: register, heartbeat, lease renewal, deregister: a saturated main
            lane never delays them.
        scheduler: the process's periodic schedules, fired on the main lane while the
            runner runs (None: it declares none).
    """

    def __init__(
        self,
        *,
        uses: WorkerUseCases,
        consumers: Consumers,
        policies: Policies,
        settings: WorkerSettings,
        main_lane: Lane,
        beat_lane: Lane,
        identity: WorkerProcess | None = None,
        metrics: JobMetrics = NO_METRICS,
        tracer: Tracer | None = None,
        scheduler: PeriodicScheduler | None = None,
    ) -> None:
        self.uses = uses
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("vesper.worker")
        self.consumers = consumers
        self.policies = policies
        self.settings = settings
        self.identity = identity or new_identity(
            settings.concurrency, settings.queues, consumers.claim_types
        )
        self.main = main_lane
        self.beat = beat_lane
        self.core = WorkerCore(
            concurrency=settings.concurrency,
            lease=policies.lease,
            types=consumers.claim_types,
            clock=time.monotonic,
            queues=settings.queues,
        )
        self.report = Report(self.identity.id, self.core)
        self._calls: dict[Attempt, ConsumerCall] = {}
        self._wake = asyncio.Event()  # binds to the running loop on first use
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.heartbeat = Heartbeat(
            core=self.core,
            uses=uses,
            identity=self.identity,
            policies=policies,
            fleet_log_interval=settings.fleet_log_interval.total_seconds(),
            main=main_lane,
            beat=beat_lane,
            metrics=metrics,
            report=self.report,
            stop_consumers=self._stop_consumers,
            wake=self.wake,
        )
        prune = uses.prune_jobs
        self.pruner = (
            Pruner(
                prune=prune,
                batch=prune.retention.batch,
                lane=main_lane,
                interval=settings.prune_interval.total_seconds(),
            )
            if prune is not None and prune.retention.prunes
            else None
        )
        # a slot is held until its consumer's thread returns: one thread per slot is enough
        self._job_pool = ThreadPoolExecutor(self.core.concurrency, thread_name_prefix="vesper-job")
        lease_seconds = policies.lease.total_seconds()
        self._recorder = OutcomeRecorder(self._write_outcomes, give_up_after=lease_seconds)
        self.scheduler = (
            SchedulerLoop(
                scheduler=scheduler,
                lane=main_lane,
                declare_every=policies.heartbeat.total_seconds(),
            )
            if scheduler is not None
            else None
        )

    # -- control, callable from any thread ----------------------------------------------

    def wake(self) -> None:
        """Claim now: jobs may be waiting (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Stop claiming and shut down gracefully (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.core.stop()
        self._stopping.set()

    @property
    def busy(self) -> int:
        """Slots in use: attempts whose consumer has not stopped."""
        return self.core.busy

    # -- the main loop ------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until stop() (or, with until_idle, until no job is due and none runs)."""
        self._loop = asyncio.get_running_loop()
        register = partial(self.uses.register_worker, self.identity)
        try:
            await until_stopped(self.beat, register, self._stopping)
        except StoppedWaiting:
            self._job_pool.shutdown(wait=False, cancel_futures=True)
            return
        log.info(
            "worker %s started: machine=%s pid=%d slots=%d queues=%s",
            self.identity.id,
            self.identity.machine,
            self.identity.pid,
            self.core.concurrency,
            _served(self.settings.queues),
        )
        self.heartbeat.start()
        if self.scheduler is not None:
            self.scheduler.start()
        if self.pruner is not None:
            self.pruner.start()
        try:
            await self._claim_loop(until_idle)
        finally:
            if self.scheduler is not None:
                await self.scheduler.stop()
            self.core.stop()
            if self.pruner is not None:
                await self.pruner.stop()
            grace_ends = time.monotonic() + self.settings.shutdown_grace.total_seconds()
            retry_until = await self._shutdown(grace_ends)
            await self.heartbeat.stop()
            # a heartbeat cancelled above runs on in its thread: one that ran after the
            # deregistration would find the process gone and register it again
            await self.beat.settle(SETTLE_S)
            await self._deregister(retry_until)
            # nothing this runner started runs on past its end (a store closed after
            # it would find connections in use, and leak them)
            await self.main.settle(SETTLE_S)
            self._job_pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self, until_idle: bool) -> None:
        errors = 0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                _, request, started = await self._claim(())
            except Exception as exc:
                errors += 1
                delay = min(0.5 * 2 ** min(errors, 10), MAX_ERROR_BACKOFF)
                log.warning("claim failed (attempt %d), retrying in %.1fs: %s", errors, delay, exc)
                await sleep_unless(self._stopping, delay)
                continue
            if errors and request is not None:
                log.info("claims work again after %d failed attempts", errors)
                errors = 0
            if until_idle and not started and self.core.idle:
                return
            if request is not None and started and len(started) == request.limit:
                timeout = None  # a slot frees -> wake
            else:
                timeout = self.settings.poll_interval.total_seconds() * random.uniform(0.8, 1.0)
            await self._wait(timeout)

    async def _claim(
        self, outcomes: Sequence[Outcome]
    ) -> tuple[list[JobRecord], ClaimRequest | None, list[Attempt]]:
        """The one claim site: the claim loop's (no outcomes), and the claim that rides
        on an outcome write (one store call: the speed of a drain). The core decides
        whether to claim, how many and of which types.

        Returns:
            The stored jobs whose outcome was recorded, the claim made (None: none
            was), and the attempts it started.
        """
        request = self.core.claim_request()
        if request is None:
            if not outcomes:
                return [], None, []
            return await self.main.run(partial(self.uses.record_outcomes, outcomes)), None, []
        worker_id = self.identity.id
        try:
            await self.heartbeat.alive_before_claiming()
        except Exception:
            self.core.claim_failed(request)
            if not outcomes:
                raise  # the claim loop backs off
            # the outcomes do not wait for the registration: recorded, nothing claimed
            return await self.main.run(partial(self.uses.record_outcomes, outcomes)), None, []
        try:
            if outcomes:
                recorded, claimed = await self.main.run(
                    partial(
                        self.uses.record_and_claim,
                        outcomes,
                        worker_id,
                        request.limit,
                        request.types,
                        request.queues,
                    )
                )
            else:
                recorded, claimed = (
                    [],
                    await self.main.run(
                        partial(
                            self.uses.claim_jobs,
                            worker_id,
                            request.limit,
                            request.types,
                            request.queues,
                        )
                    ),
                )
        except BaseException:
            self.core.claim_failed(request)
            raise
        started = self.core.claimed(request, claimed)
        for attempt in started:
            self._launch(attempt)
        return recorded, request, started

    def _launch(self, attempt: Attempt) -> None:
        record = attempt.record
        if record.started_at is not None:
            self.metrics.job_started(record, (record.started_at - record.run_at).total_seconds())
        call = ConsumerCall(attempt)
        self._calls[attempt] = call
        call.task = asyncio.create_task(self._execute(call))

    async def _execute(self, call: ConsumerCall) -> None:
        attempt = call.attempt
        record = attempt.record
        started = time.monotonic()
        consumer = self.consumers.find(record.type)
        timeout = (
            record.timeout or (consumer.timeout if consumer else None) or self.settings.job_timeout
        )
        outcome = "abandoned"
        error: str | None = None
        with (
            job_fields(job_id=str(record.id), worker_id=self.identity.id),
            job_span(self.tracer, record, worker_id=self.identity.id) as span,
        ):
            try:
                if not self.core.start(attempt):  # run_attempt will not call the consumer
                    log.warning(
                        "job %s: its lease expired locally before its consumer began;"
                        " not running it",
                        record.id,
                        extra=self.report.ids(record.id),
                    )
                try:
                    result = await run_attempt(
                        call,
                        consumer,
                        timeout,
                        self._job_pool,
                        may_begin=partial(self.core.may_begin, attempt),
                    )
                finally:
                    # The slot frees once the consumer's code has stopped: before its
                    # outcome is recorded (the lease is held, and renewed, until then), or
                    # for a sync consumer past its time limit, whenever its thread returns.
                    call.when_consumer_exits(partial(self._consumer_stopped, attempt))
                to_record = self.core.returned(attempt, result)
                if to_record is not None:  # the outcome's write claims for the free slots
                    error = to_record.error
                    outcome = await self._record(to_record)
                elif attempt.abandon_reason == CANCELLED:
                    outcome = "cancelled"  # the renewal ended the job: nothing to record
            finally:
                self.core.ended(attempt, outcome)
                del self._calls[attempt]
                self._wake.set()
                self.metrics.job_finished(record, outcome, time.monotonic() - started)
                span.finish(outcome, error or attempt.abandon_reason)
                self.report.job(record, outcome, started, attempt, span)

    def _consumer_stopped(self, attempt: Attempt) -> None:
        if self.core.consumer_stopped(attempt):
            self._wake.set()

    async def _record(self, outcome: Outcome) -> str:
        """Record `outcome`; returns how the job ended, as the store says: its status
        (done, failed, dlq, or cancelled on a cancel request), snoozed (back to pending
        later), or lease_lost (nothing recorded)."""
        stored = await self._recorder.record(outcome)
        if stored is None:
            log.warning(
                "job %s: lease lost before its outcome was recorded; another worker owns it",
                outcome.job.id,
                extra=self.report.ids(outcome.job.id),
            )
            return "lease_lost"
        if stored.status is Status.PENDING:
            return "snoozed"
        return stored.status.value

    async def _write_outcomes(self, outcomes: Sequence[Outcome]) -> list[JobRecord]:
        """The recorder's write: the outcomes, and a claim for the free slots with them.

        The attempts being recorded are still held: once recorded, each one's `_execute`
        wakes the claim loop, which claims whatever this call left free.
        """
        recorded, _, _ = await self._claim(outcomes)
        return recorded

    def _stop_consumers(self, attempts: Sequence[Attempt], message: str) -> None:
        """The core gave these attempts up: say so (`message` % job id), and cancel them."""
        for attempt in attempts:
            job_id = attempt.record.id
            log.warning(message, job_id, extra=self.report.ids(job_id))
        self._cancel(attempts)

    def _cancel(self, attempts: Sequence[Attempt]) -> None:
        """Cancel the async consumers of attempts the core gave up (it told the sync
        ones through `Job.stopping`)."""
        for attempt in attempts:
            call = self._calls.get(attempt)
            if call is not None:
                call.cancel()

    # -- shutdown -----------------------------------------------------------------------

    async def _shutdown(self, grace_ends: float) -> float:
        """Let running jobs finish until `grace_ends`, release the rest; returns until when
        the shutdown's store calls are retried."""
        tasks = self._tasks()
        if tasks:
            grace = self.settings.shutdown_grace.total_seconds()
            log.info("waiting up to %.0fs for %d running jobs", grace, len(tasks))
        # An outcome write in flight at the stop may claim too (stop() ends only the new
        # claims): its jobs start after this first look, and get the same grace. Seen in
        # the soak (seed 7): such jobs ran, then were released and ran again elsewhere.
        while tasks and (left := grace_ends - time.monotonic()) > 0:
            await asyncio.wait(tasks, timeout=left)
            tasks = self._tasks()
        retry_until = max(grace_ends, time.monotonic() + MIN_SHUTDOWN_RETRY)
        leftovers = self.core.release_at_grace_end()
        self._cancel(leftovers)
        if leftovers:
            refs = [attempt.lease for attempt in leftovers]
            release = partial(self.uses.release_jobs, refs)
            try:  # fenced: a retry after a release that did commit changes nothing
                released = await retrying(
                    f"releasing {len(refs)} jobs", self.main, release, until=retry_until
                )
                log.info("released %d unfinished jobs back to pending", len(released))
            except Exception as exc:
                log.warning(
                    "could not release %d jobs; their leases will expire: %s", len(refs), exc
                )
        remaining = self._tasks()
        if remaining:
            await asyncio.wait(remaining, timeout=1.0)
        return retry_until

    def _tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of the attempts whose lease this process holds."""
        calls = (self._calls.get(attempt) for attempt in self.core.attempts)
        return [call.task for call in calls if call is not None and call.task is not None]

    async def _deregister(self, retry_until: float) -> None:
        deregister = partial(self.uses.deregister_worker, self.identity.id)
        try:
            await retrying("deregistering", self.beat, deregister, until=retry_until)
        except Exception as exc:
            log.warning("could not deregister %s; it will be reaped: %s", self.identity.id, exc)
        self.report.summary()  # the jobs since the last periodic line
        log.info("worker %s stopped", self.identity.id)

    async def _wait(self, timeout: float | None) -> None:
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

"""The worker runner: one per process, with `concurrency` job slots.

It claims in batches of up to its free slots, wakes on a notification (a local
producer, PostgreSQL NOTIFY) or after a jittered poll interval, heartbeats and renews
leases on a thread of its own, and shuts down gracefully: stop claiming, let running
jobs finish within the grace period, release the rest, deregister.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
from opentelemetry import trace
from opentelemetry.trace import Tracer

from vesper.application.consumers import Consumers, Job
from vesper.application.execution import (
    ClaimJobs,
    Outcome,
    RecordAndClaim,
    RecordOutcomes,
    ReleaseJobs,
    RenewLeases,
    lease_of,
)
from vesper.application.fleet import (
    DeregisterWorker,
    ExpireLeases,
    GetFleet,
    HeartbeatWorker,
    ReapDeadWorkers,
    RegisterWorker,
)
from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.policies import Policies
from vesper.application.worker_settings import WorkerSettings as WorkerSettings  # noqa: PLC0414 (re-exported until issue 13 merges)
from vesper.domain.errors import SchemaNotMigrated
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import JobId, JobRecord
from vesper.entrypoints.logs import job_fields
from vesper.entrypoints.tracing import JobSpan, job_span
from vesper.entrypoints.worker.attempt import Attempt, Result, run_attempt
from vesper.entrypoints.worker.recorder import OutcomeRecorder

log = logging.getLogger("vesper.worker")
T = TypeVar("T")

MAX_ERROR_BACKOFF = 30.0
# The shutdown's store calls (releasing unfinished jobs, deregistering) are retried until
# the grace period ends, and for at least this long when running jobs used it up: a
# connection the server cut just before the signal must not leave the process in the
# fleet, or its jobs processing, until they are reaped.
MIN_SHUTDOWN_RETRY = 5.0


class StoppedWaiting(Exception):
    """stop() came while the runner waited for the store; nothing is registered."""


class StoreWait:
    """One wait for the store: a capped backoff between attempts, a log line for each
    failed one, but a schema that is not migrated is said once (it stays so until an
    operator acts; a line per retry would bury every other line)."""

    def __init__(self) -> None:
        self.failures = 0
        self._told_not_migrated = False

    def failed(self, exc: Exception) -> float:
        """Log the failure; returns the seconds to wait before the next attempt."""
        self.failures += 1
        delay: float = min(0.5 * 2.0 ** min(self.failures, 10), MAX_ERROR_BACKOFF)
        if not isinstance(exc, SchemaNotMigrated):
            log.warning(
                "store not reachable (attempt %d), retrying in %.1fs: %s", self.failures, delay, exc
            )
        elif not self._told_not_migrated:
            self._told_not_migrated = True
            log.error("%s; the workers wait for it", exc)
        return delay


@attrs.frozen(kw_only=True)
class WorkerUseCases:
    claim_jobs: ClaimJobs
    record_outcomes: RecordOutcomes
    renew_leases: RenewLeases
    release_jobs: ReleaseJobs
    register_worker: RegisterWorker
    heartbeat_worker: HeartbeatWorker
    deregister_worker: DeregisterWorker
    reap_dead_workers: ReapDeadWorkers
    expire_leases: ExpireLeases
    get_fleet: GetFleet


def new_identity(concurrency: int) -> WorkerProcess:
    machine = socket.gethostname()
    now = datetime.now(UTC)
    return WorkerProcess(
        id=f"{machine}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        machine=machine,
        pid=os.getpid(),
        concurrency=concurrency,
        started_at=now,
        last_heartbeat=now,
    )


class WorkerRunner:
    """Runs consumers for claimed jobs until `stop()` is called (or the queue is idle)."""

    def __init__(
        self,
        *,
        uses: WorkerUseCases,
        consumers: Consumers,
        policies: Policies,
        settings: WorkerSettings,
        identity: WorkerProcess | None = None,
        metrics: JobMetrics = NO_METRICS,
        tracer: Tracer | None = None,
    ) -> None:
        self.uses = uses
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("vesper.worker")
        self.consumers = consumers
        # the types this process has consumers for (None: a catch-all takes every type),
        # computed once: every claim passes them, and the claim is the hot path
        self._types = consumers.claim_types
        self.policies = policies
        self.settings = settings
        self.identity = identity or new_identity(settings.concurrency)
        # every attempt whose lease this process holds: running, or recording its outcome
        self._running: dict[JobId, Attempt] = {}
        # attempts whose consumer has not stopped: these occupy the slots. A finished
        # attempt frees its slot at once, so the next claim overlaps its outcome's commit;
        # a sync consumer abandoned (time limit, lease lost) keeps it until its thread
        # returns, so a process never runs more consumers than it has slots.
        self._occupied = 0
        self._wake = asyncio.Event()  # binds to the running loop on first use
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # outcomes since the last summary line: a done job is logged at DEBUG (a line per
        # job costs 10-20 us of the throughput), so INFO shows these counts instead
        self._done = self._failed = self._dlq = self._lost = 0
        self._counted_since = time.monotonic()
        # Store calls block: claims and outcomes on one pool, heartbeats on their own
        # thread so that a busy pool never delays a lease renewal.
        self._store_pool = ThreadPoolExecutor(2, thread_name_prefix="vesper-store")
        self._heartbeat_pool = ThreadPoolExecutor(1, thread_name_prefix="vesper-heartbeat")
        # Reaping, lease expiry and the fleet view use the main pool: on a thread of their
        # own, so that a saturated pool delays them, never a heartbeat or a renewal.
        self._maintenance_pool = ThreadPoolExecutor(1, thread_name_prefix="vesper-maintenance")
        self._maintenance: asyncio.Task[None] | None = None
        self._maintenance_failures = 0
        self._fleet_log: asyncio.Task[None] | None = None
        # a slot is held until its consumer's thread returns: one thread per slot is enough
        self._job_pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="vesper-job")
        lease_seconds = policies.lease.total_seconds()
        self._recorder = OutcomeRecorder(self._write_outcomes, give_up_after=lease_seconds)
        # a finished batch's outcomes and the next claim go to the store together
        self._record_and_claim = RecordAndClaim(record=uses.record_outcomes, claim=uses.claim_jobs)
        self._claiming = False  # a claim is in flight (one at a time: slots never overbook)

    # -- control, callable from any thread ----------------------------------------------

    def wake(self) -> None:
        """Claim now: jobs may be waiting (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Stop claiming and shut down gracefully (thread-safe)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    @property
    def busy(self) -> int:
        """Slots in use: attempts whose consumer has not stopped."""
        return self._occupied

    # -- the main loop ------------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until stop() (or, with until_idle, until no job is due and none runs)."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._until_stopped(
                self._heartbeat_pool, self.uses.register_worker, self.identity
            )
        except StoppedWaiting:
            self._shutdown_pools()
            return
        log.info(
            "worker %s started: machine=%s pid=%d slots=%d",
            self.identity.id,
            self.identity.machine,
            self.identity.pid,
            self.settings.concurrency,
        )
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        watchdog = asyncio.create_task(self._deadline_loop())
        try:
            await self._claim_loop(until_idle)
        finally:
            grace_ends = time.monotonic() + self.settings.shutdown_grace.total_seconds()
            retry_until = await self._shutdown(grace_ends)
            background = [heartbeat, watchdog]
            background += [t for t in (self._maintenance, self._fleet_log) if t is not None]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._deregister(retry_until)
            self._shutdown_pools()

    def _shutdown_pools(self) -> None:
        for pool in (self._store_pool, self._heartbeat_pool, self._maintenance_pool):
            pool.shutdown(wait=False)
        self._job_pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self, until_idle: bool) -> None:
        errors = 0
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.settings.concurrency - self._occupied
            claimed: list[JobRecord] = []
            if free > 0 and not self._claiming:
                deadline = time.monotonic() + self._lease_margin()
                self._claiming = True
                try:
                    claimed = await self._call(
                        self._store_pool, self.uses.claim_jobs, self.identity.id, free, self._types
                    )
                except Exception as exc:
                    errors += 1
                    delay = min(0.5 * 2 ** min(errors, 10), MAX_ERROR_BACKOFF)
                    log.warning(
                        "claim failed (attempt %d), retrying in %.1fs: %s", errors, delay, exc
                    )
                    await self._sleep(delay)
                    continue
                finally:
                    self._claiming = False
                if errors:
                    log.info("claims work again after %d failed attempts", errors)
                    errors = 0
                for record in claimed:
                    self._start(record, deadline)
            if until_idle and not claimed and not self._running:
                return
            if claimed and len(claimed) == free:
                timeout = None  # a slot frees -> wake
            else:
                timeout = self.settings.poll_interval.total_seconds() * random.uniform(0.8, 1.0)
            await self._wait(timeout)

    def _start(self, record: JobRecord, deadline: float) -> None:
        attempt = Attempt(context=Job(record), deadline=deadline)
        self._running[record.id] = attempt
        self._occupied += 1
        if record.started_at is not None:
            self.metrics.job_started(record, (record.started_at - record.run_at).total_seconds())
        attempt.task = asyncio.create_task(self._execute(record, attempt))

    async def _execute(self, record: JobRecord, attempt: Attempt) -> None:
        started = time.monotonic()
        consumer = self.consumers.find(record.type)
        timeout = (
            record.timeout or (consumer.timeout if consumer else None) or self.settings.job_timeout
        )
        outcome = "abandoned"
        error: str | None = None
        with (
            job_fields(**self._ids(record.id)),
            job_span(self.tracer, record, worker_id=self.identity.id) as span,
        ):
            try:
                try:
                    result = await run_attempt(attempt, consumer, timeout, self._job_pool)
                finally:
                    # The slot frees once the consumer's code has stopped: before its
                    # outcome is recorded (the lease is held, and renewed, until then), or
                    # for a sync consumer past its time limit, whenever its thread returns.
                    attempt.when_consumer_exits(lambda: self._free_slot(attempt))
                if result is not None:  # the outcome's write claims for the free slots
                    error = result.error
                    outcome = await self._record(record, result)
            finally:
                # the outcome's write may have claimed this very job again (a failure due
                # at once): that newer attempt owns the entry now, and must stay renewed
                if self._running.get(record.id) is attempt:
                    del self._running[record.id]
                if outcome == "done":
                    self._done += 1
                elif outcome == "failed":
                    self._failed += 1
                elif outcome == "dlq":
                    self._dlq += 1
                else:
                    self._lost += 1
                self._wake.set()
                self.metrics.job_finished(record, outcome, time.monotonic() - started)
                span.finish(outcome, error or attempt.abandon_reason)
                self._log_job(record, outcome, started, attempt, span)

    def _free_slot(self, attempt: Attempt) -> None:
        if attempt.holds_slot:
            attempt.holds_slot = False
            self._occupied -= 1
            self._wake.set()

    async def _record(self, record: JobRecord, result: Result) -> str:
        outcome = Outcome(job=record, error=result.error, retryable=result.retryable)
        if not await self._recorder.record(outcome):
            log.warning(
                "job %s: lease lost before its outcome was recorded; another worker owns it",
                record.id,
                extra=self._ids(record.id),
            )
            return "lease_lost"
        if result.error is None:
            return "done"
        if not result.retryable or record.retries >= record.max_retries:
            return "dlq"
        return "failed"

    async def _write_outcomes(self, outcomes: Any) -> set[JobId]:
        """Record `outcomes`, and claim for the free slots in the same store call.

        The attempts being recorded are still in _running: once recorded, each one's
        `_execute` wakes the claim loop, which claims whatever this call left free.
        """
        free = self.settings.concurrency - self._occupied
        if free <= 0 or self._claiming or self._stopping.is_set():
            return await self._call(self._store_pool, self.uses.record_outcomes, outcomes)
        deadline = time.monotonic() + self._lease_margin()
        self._claiming = True
        try:
            recorded, claimed = await self._call(
                self._store_pool,
                self._record_and_claim,
                outcomes,
                self.identity.id,
                free,
                self._types,
            )
        finally:
            self._claiming = False
        for job in claimed:
            self._start(job, deadline)
        return recorded

    # -- heartbeat, lease renewal, reaping ----------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.policies.heartbeat.total_seconds()
        last_fleet_log = time.monotonic()
        failures = 0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
                if failures:
                    log.info("heartbeat works again after %d failures", failures)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("heartbeat failed (%d in a row): %s", failures, exc)
            self._abandon_overdue()
            if (
                time.monotonic() - last_fleet_log
                >= self.settings.fleet_log_interval.total_seconds()
            ):
                last_fleet_log = time.monotonic()
                self._log_summary()
                if self._fleet_log is None or self._fleet_log.done():
                    self._fleet_log = asyncio.create_task(self._log_fleet())

    async def _beat(self) -> None:
        pool = self._heartbeat_pool
        if not await self._call(pool, self.uses.heartbeat_worker, self.identity):
            log.warning("worker %s had been reaped as dead; registered again", self.identity.id)
        attempts = {job_id: a for job_id, a in self._running.items() if a.abandon_reason is None}
        if attempts:
            renewed_at = time.monotonic()
            refs = [lease_of(a.context.record) for a in attempts.values()]
            lost = await self._call(pool, self.uses.renew_leases, refs)
            # A job whose consumer returned meanwhile ended its own lease (its outcome
            # was recorded): that is not a loss, and there is nothing left to stop.
            finished = [ref for ref in lost if attempts[ref.job_id].consumer_returned]
            for ref in finished:
                attempts.pop(ref.job_id)
            lost = [ref for ref in lost if ref not in finished]
            self.metrics.leases_renewed(len(refs) - len(lost) - len(finished))
            if lost:
                self.metrics.leases_lost(len(lost))
            for ref in lost:
                attempt = attempts.pop(ref.job_id)
                log.warning(
                    "job %s: lease lost; stopping it, nothing will be recorded",
                    ref.job_id,
                    extra=self._ids(ref.job_id),
                )
                attempt.abandon("lease lost")
            for attempt in attempts.values():
                attempt.deadline = renewed_at + self._lease_margin()
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.create_task(self._maintain())

    async def _maintain(self) -> None:
        """Reap dead workers and end overdue leases (one round at a time, not awaited by
        the heartbeat: it may wait for the main pool)."""
        pool = self._maintenance_pool
        try:
            ended = await self._call(pool, self.uses.reap_dead_workers)
            ended += await self._call(pool, self.uses.expire_leases)
        except Exception as exc:
            self._maintenance_failures += 1
            if self._maintenance_failures == 1 or self._maintenance_failures % 10 == 0:
                log.warning(
                    "reaping dead workers failed (%d in a row): %s", self._maintenance_failures, exc
                )
            return
        self._maintenance_failures = 0
        if ended:
            log.info("%d jobs of dead or silent workers are claimable again", len(ended))
            self.wake()

    async def _deadline_loop(self) -> None:
        """Check local lease deadlines on a timer of its own: a renewal stuck on a silent
        network (the heartbeat awaits it) must not keep a job running past its lease."""
        period = min(
            self.policies.heartbeat.total_seconds(), self.policies.lease.total_seconds() / 20
        )
        while True:
            await asyncio.sleep(period)
            self._abandon_overdue()

    def _abandon_overdue(self) -> None:
        """Stop jobs whose lease could not be renewed in time: another worker may own them."""
        now = time.monotonic()
        for job_id, attempt in self._running.items():
            if attempt.abandon_reason is None and now > attempt.deadline:
                log.warning(
                    "job %s: lease not renewed before it expires; stopping it",
                    job_id,
                    extra=self._ids(job_id),
                )
                attempt.abandon("lease expired locally")

    def _lease_margin(self) -> float:
        # The store's lease starts after this process's clock reading, so a deadline a
        # little short of the lease ends before the store's.
        return self.policies.lease.total_seconds() * 0.9

    # -- shutdown -----------------------------------------------------------------------

    async def _shutdown(self, grace_ends: float) -> float:
        """Let running jobs finish until `grace_ends`, release the rest; returns until when
        the shutdown's store calls are retried."""
        tasks = [a.task for a in self._running.values() if a.task is not None]
        if tasks:
            grace = self.settings.shutdown_grace.total_seconds()
            log.info("waiting up to %.0fs for %d running jobs", grace, len(tasks))
            await asyncio.wait(tasks, timeout=max(grace_ends - time.monotonic(), 0.0))
        retry_until = max(grace_ends, time.monotonic() + MIN_SHUTDOWN_RETRY)
        leftovers = [a for a in self._running.values() if a.abandon_reason is None]
        for attempt in leftovers:
            attempt.abandon("shutdown")
        if leftovers:
            refs = [lease_of(a.context.record) for a in leftovers]
            try:  # fenced: a retry after a release that did commit changes nothing
                released = await self._retrying(
                    f"releasing {len(refs)} jobs",
                    self._store_pool,
                    self.uses.release_jobs,
                    refs,
                    until=retry_until,
                )
                log.info("released %d unfinished jobs back to pending", len(released))
            except Exception as exc:
                log.warning(
                    "could not release %d jobs; their leases will expire: %s", len(refs), exc
                )
        remaining = [a.task for a in self._running.values() if a.task is not None]
        if remaining:
            await asyncio.wait(remaining, timeout=1.0)
        return retry_until

    async def _deregister(self, retry_until: float) -> None:
        try:
            await self._retrying(
                "deregistering",
                self._heartbeat_pool,
                self.uses.deregister_worker,
                self.identity.id,
                until=retry_until,
            )
        except Exception as exc:
            log.warning("could not deregister %s; it will be reaped: %s", self.identity.id, exc)
        self._log_summary()  # the jobs since the last periodic line
        log.info("worker %s stopped", self.identity.id)

    # -- helpers ------------------------------------------------------------------------

    def _ids(self, job_id: JobId) -> dict[str, str]:
        """Structured fields of a job's log line (JSON keys, or key=value in text)."""
        return {"job_id": str(job_id), "worker_id": self.identity.id}

    async def _call(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _retrying(
        self,
        what: str,
        pool: ThreadPoolExecutor,
        fn: Callable[..., T],
        *args: Any,
        until: float,
    ) -> T:
        """`fn(*args)` on `pool`, retried with a capped backoff while it fails, until
        `until` (time.monotonic()), when the last error is raised (shutdown: the grace).

        A try after a dropped connection (a terminated backend, a server restart) runs
        on a fresh one: told of the disconnect, SQLAlchemy's pool replaces every
        connection opened before it instead of handing the next dead one out.
        """
        failures = 0
        while True:
            try:
                return await self._call(pool, fn, *args)
            except Exception as exc:
                failures += 1
                delay = min(0.1 * 2 ** min(failures, 10), MAX_ERROR_BACKOFF)
                left = until - time.monotonic()
                if left <= 0:
                    raise
                delay = min(delay, left)
                log.warning(
                    "store not reachable for %s (attempt %d), retrying in %.1fs: %s",
                    what,
                    failures,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    async def _until_stopped(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on `pool`, retried while the store fails (start-up: the database
        may be down or not migrated yet).

        Raises:
            StoppedWaiting: stop() came first. A call in flight is abandoned, not
                awaited (a connection attempt can take seconds; a SIGTERM'd process
                exits at once): should it register after all, the worker is reaped.
        """
        wait = StoreWait()
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                call = asyncio.ensure_future(self._call(pool, fn, *args))
                await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not call.done():
                    call.cancel()
                    break
                try:
                    return call.result()
                except Exception as exc:
                    await self._sleep(wait.failed(exc))
        finally:
            stopping.cancel()
        raise StoppedWaiting

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

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _log_job(
        self, record: JobRecord, outcome: str, started: float, attempt: Attempt, span: JobSpan
    ) -> None:
        level = logging.DEBUG if outcome == "done" else logging.INFO
        if not log.isEnabledFor(level):
            return  # a done job's line is DEBUG: not built at all at the usual levels
        wait_ms = (
            (record.started_at - record.run_at).total_seconds() * 1000 if record.started_at else 0.0
        )
        fields: dict[str, object] = {
            "job_id": str(record.id),
            "job_type": record.type,
            "worker_id": self.identity.id,
            "priority": record.priority,
            "attempt": record.attempts,
            "wait_ms": round(max(wait_ms, 0.0), 1),
            "run_ms": round((time.monotonic() - started) * 1000, 1),
            "outcome": outcome,
        }
        if attempt.abandon_reason:
            fields["reason"] = attempt.abandon_reason
        if span.trace_id:
            fields["trace_id"] = span.trace_id
        # the fields are the record's extras; the formatter prints them (key=value or JSON)
        log.log(level, "job %s", outcome, extra=fields)

    def _log_summary(self) -> None:
        """One INFO line with the outcomes since the last one; none while idle."""
        finished = self._done + self._failed + self._dlq + self._lost
        now = time.monotonic()
        if finished:
            log.info(
                "jobs: done=%d failed=%d dlq=%d abandoned=%d in the last %.0fs",
                *(self._done, self._failed, self._dlq, self._lost),
                now - self._counted_since,
            )
        self._done = self._failed = self._dlq = self._lost = 0
        self._counted_since = now

    async def _log_fleet(self) -> None:
        try:
            fleet = await self._call(self._maintenance_pool, self.uses.get_fleet)
        except Exception:
            return
        log.info(  # the jobs finished here: the summary line logged just before this one
            "fleet: processes=%d slots=%d busy_here=%d/%d",
            len(fleet.processes),
            fleet.total_workers,
            self._occupied,
            self.settings.concurrency,
        )

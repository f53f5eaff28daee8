"""The in-memory store: the reference behaviour, for tests and for embedding.

Thread-safe (one lock); one process only. Claims use heaps so that a claim costs
O(k log n) however many jobs are queued: `_scheduled` holds claimable jobs by run_at,
and `_ready` holds the due ones of each queue in claim order. Entries are invalidated
lazily: an entry counts only while the job's current (status, run_at) still matches it.
A queue with settings that limit claims (queues.py) is claimed from by a scan of its
due jobs under the lock instead: exact, and linear in that queue's backlog.
"""

from __future__ import annotations

import heapq
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from vesper.adapters.clock import SystemClock
from vesper.adapters.memory_schedules import InMemoryScheduleRegistry
from vesper.application.ports import Capabilities, Clock, Submitted
from vesper.domain.activity import MINUTE, Activity, minute_of
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter, apply, kinds_of, slots_of, take
from vesper.domain.errors import IdempotencyConflict, IllegalTransition, JobNotFound, UniqueKeyHeld
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed, UniqueSlot
from vesper.domain.ordering import claim_order
from vesper.domain.query import JobPage, JobQuery, page_of
from vesper.domain.queues import (
    QueueChange,
    QueueSettings,
    QueueState,
    check_queue,
    effective_priority,
    pick_by_key,
    queue_allowance,
    rate_log_after,
)
from vesper.domain.retention import check_ages, deletable, prunable
from vesper.domain.states import ACTIVE, CLAIMABLE, FINISHED, Status
from vesper.domain.stats import ActiveJobs, QueueStats, QueueSummary, check_cap
from vesper.domain.submission import NewJob

_Entry = tuple[int, datetime, int, JobId]


class InMemoryJobRepository:
    # one process; complete_and_claim would save no call
    capabilities = Capabilities(activity=True, summary=True, queues=True)

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._jobs: dict[JobId, JobRecord] = {}  # insertion order = seq order
        self._by_key: dict[str, JobId] = {}
        # the last job given each unique key, by (queue, key): a key is held per queue
        self._by_unique: dict[UniqueSlot, JobId] = {}
        self._processing: set[JobId] = set()
        self._scheduled: list[tuple[datetime, int, JobId]] = []
        self._ready: dict[str, list[_Entry]] = {}  # by queue
        # finished jobs by status, oldest finished_at first, for prunes (lazily
        # invalidated like the claim heaps: an entry counts while the job still matches)
        self._finished: dict[Status, list[tuple[datetime, int, JobId]]] = {
            status: [] for status in FINISHED
        }
        self._seq = 0
        self._queues: dict[str, QueueSettings] = {}
        self._rate_logs: dict[str, list[datetime]] = {}

    def now(self) -> datetime:
        return self._clock.now()

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        with self._lock:
            at = now or self.now()
            results: list[Submitted | NewJob] = []
            # a key's first job in the batch and what it came to: a repeat gets the same
            # (a key twice with other fingerprints is a conflict, whatever became of the
            # first: a unique key held may have kept it from being inserted)
            batch_keys: dict[str, tuple[NewJob, Submitted | NewJob]] = {}
            batch_unique: dict[UniqueSlot, NewJob] = {}
            for new in jobs:  # check everything before changing anything
                key = new.idempotency_key
                bound = self._jobs[self._by_key[key]] if key in self._by_key else None
                earlier = batch_keys.get(key) if key is not None else None
                slot = new.unique_slot
                active = self._active(slot)
                result: Submitted | NewJob
                if bound is not None:
                    if bound.fingerprint != new.fingerprint:
                        raise IdempotencyConflict(key or "")
                    result = Submitted(job=bound, created=False)
                elif earlier is not None:
                    if earlier[0].fingerprint != new.fingerprint:
                        raise IdempotencyConflict(key or "")
                    result = earlier[1]  # a NewJob resolves below to the job it became
                elif active is not None:
                    result = Submitted(job=active, created=False)
                elif slot is not None and slot in batch_unique:
                    result = batch_unique[slot]
                else:
                    if slot is not None:
                        batch_unique[slot] = new
                    result = new
                if key is not None and key not in batch_keys and bound is None:
                    batch_keys[key] = (new, result)
                results.append(result)
            created: dict[JobId, JobRecord] = {}
            out: list[Submitted] = []
            for item in results:
                if isinstance(item, Submitted):
                    out.append(item)
                elif item.id in created:
                    out.append(Submitted(job=created[item.id], created=False))
                else:
                    self._seq += 1
                    job = item.materialize(now=at, seq=self._seq)
                    created[job.id] = job
                    self._put(job)
                    if job.idempotency_key is not None:
                        self._by_key[job.idempotency_key] = job.id
                    if job.unique_slot is not None:
                        self._by_unique[job.unique_slot] = job.id
                    out.append(Submitted(job=job, created=True))
            return out

    def _active(self, slot: UniqueSlot | None) -> JobRecord | None:
        """The active job holding `slot` (a unique key in a queue), if any."""
        if slot is None or slot not in self._by_unique:
            return None
        job = self._jobs.get(self._by_unique[slot])  # None: deleted since
        return None if job is None or job.status in FINISHED else job

    def _hold(self, job: JobRecord) -> JobRecord:
        """A retried job holds its unique key again (the caller checked it was free)."""
        if job.unique_slot is not None and job.status not in FINISHED:
            self._by_unique[job.unique_slot] = job.id
        return job

    def get(self, job_id: JobId) -> JobRecord:
        with self._lock:
            try:
                return self._jobs[job_id]
            except KeyError:
                raise JobNotFound(job_id) from None

    def find(self, query: JobQuery) -> JobPage:
        with self._lock:
            before = query.before_seq
            found: list[JobRecord] = []
            for job in reversed(self._jobs.values()):
                if before is not None and job.seq >= before:
                    continue
                if query.status is not None and job.status is not query.status:
                    continue
                if query.type is not None and job.type != query.type:
                    continue
                if query.priority is not None and job.priority != query.priority:
                    continue
                if query.queue is not None and job.queue != query.queue:
                    continue
                if not query.matches_search(job):
                    continue
                found.append(job)
                if len(found) > query.limit:
                    break
            return page_of(found, query.limit)

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        with self._lock:
            at = now or self.now()
            self._promote_due(at)
            wanted = set(types) if types is not None else None
            names = sorted(self._ready) if queues is None else sorted(set(queues))
            token = uuid.uuid4()
            # the limited queues first, each within its limits: the others fill the
            # rest (first, they would leave a limited queue nothing while busy)
            picked: list[JobRecord] = []
            for name in names:
                if len(picked) < limit and self._settings(name).limited:
                    picked += self._pick_limited(name, wanted, at, limit - len(picked))
            free = [q for q in names if not self._settings(q).limited]
            picked += self._pick_free(free, wanted, at, limit - len(picked))
            return [
                self._put(job.claim(worker_id=worker_id, token=token, now=at, lease=lease))
                for job in picked
            ]

    def _pick_free(
        self, names: list[str], wanted: set[str] | None, at: datetime, limit: int
    ) -> list[JobRecord]:
        """Up to `limit` due jobs of queues without limits, in claim order."""
        found: list[tuple[_Entry, str]] = []
        skipped: list[tuple[_Entry, str]] = []
        seen: set[JobId] = set()  # a job may have twin entries (released, same place)
        for name in names:
            heap = self._ready.get(name, [])
            taken = 0
            while heap and taken < limit:
                entry = heapq.heappop(heap)
                job = self._live(entry)
                if job is None or job.id in seen:
                    continue
                # A claim at a later `now` may have promoted jobs not due at this one.
                if job.run_at > at or (wanted is not None and job.type not in wanted):
                    skipped.append((entry, name))
                    continue
                found.append((entry, name))
                seen.add(job.id)
                taken += 1
        found.sort()
        for entry, name in found[limit:] + skipped:
            heapq.heappush(self._ready[name], entry)
        return [self._jobs[entry[3]] for entry, _ in found[:limit]]

    def _pick_limited(
        self, name: str, wanted: set[str] | None, at: datetime, limit: int
    ) -> list[JobRecord]:
        """The jobs a claim may take from a queue whose settings limit it."""
        settings = self._settings(name)
        running = [self._jobs[i] for i in self._processing if self._jobs[i].queue == name]
        log = self._rate_logs.get(name, [])
        allowed = queue_allowance(settings, processing=len(running), log=log, now=at, limit=limit)
        if allowed <= 0:
            return []
        # the scan drops the heap's stale entries as it goes
        heap = [entry for entry in self._ready.get(name, []) if self._live(entry) is not None]
        heapq.heapify(heap)
        self._ready[name] = heap
        due = {
            job.id: job
            for entry in heap
            if (job := self._jobs[entry[3]]).run_at <= at and (wanted is None or job.type in wanted)
        }
        ordered = sorted(
            due.values(),
            key=lambda j: (
                -effective_priority(j.priority, j.run_at, at, settings.aging),
                j.run_at,
                j.seq,
            ),
        )
        busy: dict[str, int] = {}
        for job in running:
            if job.concurrency_key is not None:
                busy[job.concurrency_key] = busy.get(job.concurrency_key, 0) + 1
        picked = pick_by_key(
            [(job, job.concurrency_key) for job in ordered], busy, settings.key_concurrency, allowed
        )
        if settings.rate is not None:
            self._rate_logs[name] = rate_log_after(settings.rate, log, at, len(picked))
        return picked

    def _settings(self, name: str) -> QueueSettings:
        return self._queues.get(name) or QueueSettings(name=name)

    def queue_settings(self) -> list[QueueSettings]:
        with self._lock:
            return [self._queues[name] for name in sorted(self._queues)]

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        check_queue(name, "name")
        with self._lock:
            settings = change.apply(self._settings(name))
            if settings.rate != self._settings(name).rate:
                self._rate_logs.pop(name, None)
            self._queues[name] = settings
            return settings

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        with self._lock:
            at = now or self.now()
            counts: dict[str, dict[Status, int]] = {}
            oldest: dict[str, datetime] = {}
            due_types: dict[str, set[str]] = {}
            for job in self._jobs.values():
                by_status = counts.setdefault(job.queue, dict.fromkeys(Status, 0))
                by_status[job.status] += 1
                if job.is_due(at):
                    due_types.setdefault(job.queue, set()).add(job.type)
                    if job.queue not in oldest or job.run_at < oldest[job.queue]:
                        oldest[job.queue] = job.run_at
            return [
                QueueState(
                    settings=self._settings(name),
                    counts=counts.get(name, dict.fromkeys(Status, 0)),
                    oldest_due_run_at=oldest.get(name),
                    due_types=tuple(sorted(due_types.get(name, ()))),
                    now=at,
                )
                for name in sorted(set(counts) | set(self._queues))
            ]

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        given = results or {}

        def done(job: JobRecord, ref: LeaseRef, at: datetime) -> JobRecord:
            text = given.get(job.id)
            return job.complete(ref, now=at, result=None if text is None else json.loads(text))

        return self._fenced(leases, now, done)

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        by_ref = {f.lease: f for f in failures}
        return self._fenced(
            [f.lease for f in failures], now, lambda job, ref, at: job.fail(by_ref[ref], now=at)
        )

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(leases, now, lambda job, ref, at: job.renew(ref, now=at, lease=lease))

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(leases, now, lambda job, ref, at: job.release(ref, now=at))

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        with self._lock:
            at = now or self.now()
            dead = set(worker_ids)
            ended: list[JobRecord] = []
            for job_id in sorted(self._processing, key=lambda i: self._jobs[i].seq):
                job = self._jobs[job_id]
                assert job.lease is not None
                if job.lease.expires_at <= at or job.lease.worker_id in dead:
                    ended.append(self._put(job.expire(now=at)))
            return ended

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        with self._lock:
            return self._put(self.get(job_id).cancel(now=now or self.now()))

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        with self._lock:
            job = self.get(job_id)
            retried = job.retry(now=now or self.now())  # IllegalTransition first
            holder = self._active(job.unique_slot)
            if holder is not None and holder.id != job.id:
                assert job.unique_key is not None
                raise UniqueKeyHeld(job.id, job.status, job.unique_key, holder.id, queue=job.queue)
            return self._hold(self._put(retried))

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        by_ref = {s.lease: s for s in snoozes}
        return self._fenced(
            [s.lease for s in snoozes],
            now,
            lambda job, ref, at: job.snooze(by_ref[ref], now=at),
        )

    def bulk(
        self,
        action: BulkAction,
        where: BulkFilter,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> BulkBatch:
        where.statuses(action)  # refuses a status the action cannot take, jobs or none
        with self._lock:
            at = now or self.now()
            # insertion order is seq order
            matching = [j for j in self._jobs.values() if where.matches(j, action)][:limit]
            slots = slots_of(matching)
            holders = {k: h.id for k in slots if (h := self._active(k)) is not None}
            taken, skipped = take(matching, action, holders)
            for job in taken:
                self._hold(self._put(apply(job, action, now=at)))
            last = matching[-1].seq if matching else None
            return BulkBatch(
                changed=len(taken), skipped=len(skipped), last_seq=last, kinds=kinds_of(taken)
            )

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        with self._lock:
            at = now or self.now()
            counts: dict[tuple[Status, int], int] = {}
            oldest: datetime | None = None
            for job in self._jobs.values():
                key = (job.status, job.priority)
                counts[key] = counts.get(key, 0) + 1
                if job.is_due(at) and (oldest is None or job.run_at < oldest):
                    oldest = job.run_at
            return QueueStats(counts=counts, oldest_due_run_at=oldest, now=at)

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        with self._lock:
            return [self._jobs[i] for i in dict.fromkeys(job_ids) if i in self._jobs]

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        check_ages(older_than)
        with self._lock:
            at = now or self.now()
            counts: dict[Status, int] = {}
            for status, age in older_than.items():
                heap = self._finished[status]
                while heap and heap[0][0] <= at - age and sum(counts.values()) < limit:
                    _, _, job_id = heapq.heappop(heap)
                    job = self._jobs.get(job_id)
                    if job is None or not prunable(job, older_than, at):
                        continue  # deleted, retried, or finished again later: stale
                    self._remove(job)
                    counts[job.status] = counts.get(job.status, 0) + 1
            return counts

    def delete(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        with self._lock:
            job = self.get(job_id)
            if not deletable(job):
                raise IllegalTransition(job_id, job.status, "delete")
            self._remove(job)
            return job

    def summary(self, *, cap: int, now: datetime | None = None) -> QueueSummary:
        # counting a dict is cheap at any size the process can hold: no cap needed to do it
        check_cap(cap)
        with self._lock:
            by_queue: dict[str, dict[Status, int]] = {name: {} for name in self._queues}
            for job in self._jobs.values():
                if job.status in ACTIVE:
                    counts = by_queue.setdefault(job.queue, {})
                    counts[job.status] = counts.get(job.status, 0) + 1
            return attrs.evolve(
                QueueSummary.of(self.stats(now=now), cap),
                active_by_queue={q: ActiveJobs.of(by_queue[q], cap) for q in sorted(by_queue)},
            )

    def activity(self, *, window: timedelta, now: datetime | None = None) -> Activity:
        with self._lock:
            at = now or self.now()
            since = minute_of(at - window + MINUTE)
            counts: dict[datetime, tuple[int, int]] = {}
            for job in self._jobs.values():
                ended = _ended(job)
                if ended is None or not since <= ended[1] <= at:
                    continue
                done, failed = counts.get(minute_of(ended[1]), (0, 0))
                counts[minute_of(ended[1])] = (done + ended[0], failed + 1 - ended[0])
            return Activity.of(counts, now=at, window=window)

    # -- internals -------------------------------------------------------------------

    def _remove(self, job: JobRecord) -> None:
        """Forget a finished job (no heap holds it: it is not claimable) and free its key."""
        del self._jobs[job.id]
        if job.idempotency_key is not None and self._by_key.get(job.idempotency_key) == job.id:
            del self._by_key[job.idempotency_key]
        if job.unique_slot is not None and self._by_unique.get(job.unique_slot) == job.id:
            del self._by_unique[job.unique_slot]

    def _fenced(
        self,
        refs: Sequence[LeaseRef],
        now: datetime | None,
        change: Callable[[JobRecord, LeaseRef, datetime], JobRecord],
    ) -> list[JobRecord]:
        with self._lock:
            at = now or self.now()
            changed: list[JobRecord] = []
            for ref in refs:
                job = self._jobs.get(ref.job_id)
                if job is not None and job.holds(ref, at):
                    changed.append(self._put(change(job, ref, at)))
            return changed

    def _put(self, job: JobRecord) -> JobRecord:
        """Store `job` and index it for claims if it is claimable."""
        self._jobs[job.id] = job
        if job.status is Status.PROCESSING:
            self._processing.add(job.id)
        else:
            self._processing.discard(job.id)
        if job.status in CLAIMABLE:
            heapq.heappush(self._scheduled, (job.run_at, job.seq, job.id))
        elif job.status in FINISHED and job.finished_at is not None:
            heapq.heappush(self._finished[job.status], (job.finished_at, job.seq, job.id))
        return job

    def _promote_due(self, now: datetime) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            run_at, _, job_id = heapq.heappop(self._scheduled)
            job = self._jobs.get(job_id)  # None: deleted since (a finished job)
            if job is not None and job.status in CLAIMABLE and job.run_at == run_at:
                heapq.heappush(self._ready.setdefault(job.queue, []), (*claim_order(job), job.id))

    def _live(self, entry: _Entry) -> JobRecord | None:
        job = self._jobs.get(entry[3])
        if job is not None and job.status in CLAIMABLE and claim_order(job) == entry[:3]:
            return job
        return None


class InMemoryWorkerRegistry:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._processes: dict[str, WorkerProcess] = {}

    def register(self, process: WorkerProcess, *, now: datetime | None = None) -> WorkerProcess:
        at = now or self._clock.now()
        with self._lock:
            registered = attrs.evolve(process, started_at=at, last_heartbeat=at)
            self._processes[process.id] = registered
            return registered

    def heartbeat(self, worker_id: str, *, now: datetime | None = None) -> bool:
        at = now or self._clock.now()
        with self._lock:
            process = self._processes.get(worker_id)
            if process is None:
                return False
            self._processes[worker_id] = attrs.evolve(process, last_heartbeat=at)
            return True

    def deregister(self, worker_id: str) -> None:
        with self._lock:
            self._processes.pop(worker_id, None)

    def processes(self) -> list[WorkerProcess]:
        with self._lock:
            return list(self._processes.values())

    def reap(self, *, dead_after: timedelta, now: datetime | None = None) -> list[str]:
        at = now or self._clock.now()
        with self._lock:
            dead = [p.id for p in self._processes.values() if p.last_heartbeat < at - dead_after]
            for worker_id in dead:
                del self._processes[worker_id]
            return dead


def _ended(job: JobRecord) -> tuple[int, datetime] | None:
    """(1, when) for a job that finished done, (0, when) for its last failure; None
    for the others (the ports' activity() semantics)."""
    if job.status is Status.DONE and job.finished_at is not None:
        return 1, job.finished_at
    if job.status is Status.DLQ and job.finished_at is not None:
        return 0, job.finished_at
    if job.status is Status.FAILED:
        return 0, job.updated_at
    return None


class InMemoryStore:
    """Jobs and workers in this process's memory; gone when it exits."""

    # any number of calls at once: they take the lock for microseconds
    capacity: int | None = None

    def __init__(self, clock: Clock | None = None) -> None:
        self.jobs = InMemoryJobRepository(clock)
        self.workers = InMemoryWorkerRegistry(clock)
        self.schedules = InMemoryScheduleRegistry(clock)

    def close(self) -> None:
        """Nothing to release."""

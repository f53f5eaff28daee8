"""A store that takes the freedoms the JobRepository port leaves it, for the suite to
show that they pass: it offers no complete_and_claim (RecordAndClaim then composes
complete and claim) unless asked to keep the one of the store it wraps, and, when asked,
gives each claimed job a lease token of its own and returns the fenced updates' and
expire's results (complete_and_claim's completed jobs too) in another order than the
store it wraps.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

import attrs

from vesper.application.ports import (
    CompletingJobRepository,
    JobRepository,
    Store,
    Submitted,
    WorkerRegistry,
)
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats
from vesper.domain.submission import NewJob


class FreeJobs:
    """`inner`, without complete_and_claim unless `keep_complete_and_claim` (and `inner`
    offers it); `per_job_tokens`: each claimed job gets a token of its own (derived from
    the one `inner` shares among a claim's jobs, and valid only with that job's id);
    `reordered`: results in reverse order."""

    def __init__(
        self,
        inner: JobRepository,
        *,
        per_job_tokens: bool = False,
        reordered: bool = False,
        keep_complete_and_claim: bool = False,
    ) -> None:
        self._inner = inner
        kept = keep_complete_and_claim and inner.capabilities.complete_and_claim
        # activity and summary are optional too: a store free of them shows the dashboard
        # no chart, and counts its overview through stats; no queues either: a store
        # without them still passes the rest of the suite
        self.capabilities = attrs.evolve(
            inner.capabilities,
            complete_and_claim=kept,
            activity=False,
            summary=False,
            queues=False,
        )
        self._per_job_tokens = per_job_tokens
        self._reordered = reordered
        self._inner_tokens: dict[uuid.UUID, tuple[JobId, uuid.UUID]] = {}

    def now(self) -> datetime:
        return self._inner.now()

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        results = self._inner.submit(jobs, now=now)
        return [attrs.evolve(s, job=self._out(s.job)) for s in results]

    def get(self, job_id: JobId) -> JobRecord:
        return self._out(self._inner.get(job_id))

    def find(self, query: JobQuery) -> JobPage:
        page = self._inner.find(query)
        return attrs.evolve(page, jobs=tuple(self._out(job) for job in page.jobs))

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        claimed = self._inner.claim(
            worker_id=worker_id, limit=limit, lease=lease, types=types, now=now
        )
        return [self._out(job) for job in claimed]  # claim order is the port's

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        inner = [self._in(r) for r in leases]
        return self._changed(self._inner.complete(inner, now=now, results=results))

    def complete_and_claim(
        self,
        leases: Sequence[LeaseRef],
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """The inner store's, as this store shows results (only when capabilities say)."""
        if not self.capabilities.complete_and_claim:
            raise NotImplementedError("this FreeJobs offers no complete_and_claim")
        inner = cast(CompletingJobRepository, self._inner)
        done, claimed = inner.complete_and_claim(
            [self._in(r) for r in leases],
            worker_id=worker_id,
            limit=limit,
            lease=lease,
            types=types,
            now=now,
        )
        return self._changed(done), [self._out(job) for job in claimed]

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        inner = [attrs.evolve(f, lease=self._in(f.lease)) for f in failures]
        return self._changed(self._inner.fail(inner, now=now))

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        inner = [self._in(r) for r in leases]
        return self._changed(self._inner.renew(inner, lease=lease, now=now))

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._changed(self._inner.release([self._in(r) for r in leases], now=now))

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        return self._changed(self._inner.expire(worker_ids=worker_ids, now=now))

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._out(self._inner.cancel(job_id, now=now))

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._out(self._inner.retry(job_id, now=now))

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        return self._inner.stats(now=now)

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        found = [self._out(job) for job in self._inner.get_many(job_ids)]
        return found[::-1] if self._reordered else found

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        return self._inner.prune(older_than, limit=limit, now=now)

    def delete(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._out(self._inner.delete(job_id, now=now))

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        inner = [attrs.evolve(s, lease=self._in(s.lease)) for s in snoozes]
        return self._changed(self._inner.snooze(inner, now=now))

    def bulk(
        self,
        action: BulkAction,
        where: BulkFilter,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> BulkBatch:
        return self._inner.bulk(action, where, limit=limit, now=now)

    def _out(self, job: JobRecord) -> JobRecord:
        """`job` as this store shows it: with its own token."""
        if not self._per_job_tokens or job.lease is None:
            return job
        token = uuid.uuid5(job.lease.token, str(job.id))
        self._inner_tokens[token] = (job.id, job.lease.token)
        return attrs.evolve(job, lease=attrs.evolve(job.lease, token=token))

    def _in(self, ref: LeaseRef) -> LeaseRef:
        """`ref` as the inner store knows it; a token presented with another job's id
        stays what it is, which the inner store knows for no job."""
        known = self._inner_tokens.get(ref.token)
        if known is None or known[0] != ref.job_id:
            return ref
        return LeaseRef(job_id=ref.job_id, token=known[1])

    def _changed(self, jobs: list[JobRecord]) -> list[JobRecord]:
        shown = [self._out(job) for job in jobs]
        return shown[::-1] if self._reordered else shown


class FreeStore:
    """`inner` with its jobs as FreeJobs shows them; closing it closes `inner`."""

    def __init__(
        self,
        inner: Store,
        *,
        per_job_tokens: bool = False,
        reordered: bool = False,
        keep_complete_and_claim: bool = False,
    ) -> None:
        self._inner = inner
        self._jobs = FreeJobs(
            inner.jobs,
            per_job_tokens=per_job_tokens,
            reordered=reordered,
            keep_complete_and_claim=keep_complete_and_claim,
        )

    @property
    def jobs(self) -> JobRepository:
        return self._jobs

    @property
    def workers(self) -> WorkerRegistry:
        return self._inner.workers

    def close(self) -> None:
        """Close the store it wraps."""
        self._inner.close()

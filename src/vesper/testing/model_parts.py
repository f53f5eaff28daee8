"""The model test's vocabulary: job specs to draw, lease pairs, and the comparison of two
stores' answers (blind to lease tokens and insertion numbers, which legitimately differ)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import cast

import attrs
from hypothesis import strategies as st

from vesper.application.ports import JobRepository, QueueingJobRepository, Submitted
from vesper.domain.job import JobId, JobRecord, LeaseRef, UniqueSlot
from vesper.domain.queues import UNSET, QueueChange
from vesper.domain.states import FINISHED, Status
from vesper.domain.submission import NewJob
from vesper.testing.fixtures import new_job as build_job

NO_TOKEN = uuid.UUID(int=0)


@attrs.frozen
class JobSpec:
    """What a producer asks for; the same spec twice is an idempotent replay if keyed."""

    type: str
    priority: int
    key: str | None
    delay: int  # seconds
    max_retries: int
    payload: int
    queue: str = "default"
    concurrency_key: str | None = None
    unique_key: str | None = None

    def new_job(self) -> NewJob:
        return build_job(
            self.type,
            queue=self.queue,
            concurrency_key=self.concurrency_key,
            priority=self.priority,
            key=self.key,
            delay=timedelta(seconds=self.delay),
            max_retries=self.max_retries,
            payload={"n": self.payload},
            unique_key=self.unique_key,
        )


@attrs.frozen
class HeldLease:
    """One claim of one job, as each store leased it; stays usable once stale."""

    oracle: LeaseRef
    subject: LeaseRef


specs = st.builds(
    JobSpec,
    type=st.sampled_from(["a", "b"]),
    priority=st.integers(0, 2),
    key=st.none() | st.sampled_from(["k0", "k1", "k2"]),
    delay=st.sampled_from([0, 0, 0, 5, 20]),
    max_retries=st.integers(0, 3),
    payload=st.integers(0, 1),
    queue=st.sampled_from(["default", "default", "q1"]),
    concurrency_key=st.sampled_from([None, "t1", "t2"]),
    # two keys among a few jobs in two queues: retries and bulk retries meet keys held
    # by others, in their own queue and in the other one
    unique_key=st.none() | st.sampled_from(["u0", "u1"]),
)

# queue settings a rule may set: pause, each limit, aging (None clears one)
queue_changes = st.builds(
    QueueChange,
    paused=st.sampled_from([UNSET, True, False, False]),
    concurrency=st.sampled_from([UNSET, None, 1, 2]),
    rate=st.sampled_from([UNSET, None, "2/10s"]),
    key_concurrency=st.sampled_from([UNSET, None, 1]),
    aging=st.sampled_from([UNSET, None, "5s"]),
)


def plain(spec: JobSpec) -> JobSpec:
    """The spec for a store without named queues: every job in "default", no key."""
    return attrs.evolve(spec, queue="default", concurrency_key=None)


def norm(job: JobRecord) -> JobRecord:
    """The job without what legitimately differs between two stores."""
    lease = attrs.evolve(job.lease, token=NO_TOKEN) if job.lease is not None else None
    return attrs.evolve(job, lease=lease, seq=0)


def norm_all(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    """Normalized and in id order: the port does not order these results."""
    return sorted((norm(j) for j in jobs), key=lambda j: j.id)


def summary(results: Sequence[Submitted]) -> list[tuple[JobRecord, bool]]:
    return [(norm(s.job), s.created) for s in results]


def nonzero(counts: Mapping[tuple[Status, int], int]) -> dict[tuple[Status, int], int]:
    return {key: n for key, n in counts.items() if n}


def nonzero_status(counts: Mapping[Status, int]) -> dict[Status, int]:
    return {status: n for status, n in counts.items() if n}


def holders(jobs: Iterable[JobRecord]) -> dict[UniqueSlot, JobId]:
    """The active jobs among `jobs` by the (queue, unique key) each holds. Fails if two
    hold one: at most one active job has a key in each queue."""
    held: dict[UniqueSlot, JobId] = {}
    for job in jobs:
        slot = slot_of(job)
        if slot is None or job.status in FINISHED:
            continue
        assert slot not in held, f"two active jobs hold {slot}: {held[slot]} and {job.id}"
        held[slot] = job.id
    return held


def check_unique(
    batch: Sequence[NewJob], results: Sequence[Submitted], held: Mapping[UniqueSlot, JobId]
) -> None:
    """A submission's results against the per-queue rule, given the active holders
    before it (`held`): a job with a unique key (and no idempotency key, which is checked
    first) gets the job holding the key in its own queue (held before, or created by an
    earlier job of the batch), or is created when none does; a holder in another queue
    changes nothing. Independent of the reference store, which could share a store's
    mistake."""
    holding = dict(held)
    for new, result in zip(batch, results, strict=True):
        slot = slot_of(new)
        if new.idempotency_key is None and slot is not None:
            if slot in holding:
                assert (result.job.id, result.created) == (holding[slot], False), (
                    f"{slot} is held by {holding[slot]}, yet the submission got {result}"
                )
            else:
                assert result.created, f"{slot} is free, yet the submission got {result}"
        if result.created and (made := slot_of(result.job)) is not None:
            holding[made] = result.job.id


def slot_of(job: JobRecord | NewJob) -> UniqueSlot | None:
    """The (queue, unique key) a job holds while active: spelled out here rather than
    read from `unique_slot`, so that the model states the rule on its own."""
    return None if job.unique_key is None else UniqueSlot(job.queue, job.unique_key)


def queueing(repo: JobRepository) -> QueueingJobRepository:
    """`repo` as a store with named queues (the model uses it only when it has them)."""
    return cast(QueueingJobRepository, repo)

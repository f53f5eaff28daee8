"""QueueingJobRepository: claims by queue and type, pause, each limit, aging, settings.

These tests run one claimer at a time with explicit times (queue_races_contract.py
races several). A store without `capabilities.queues` skips them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest

from vesper.application.ports import QueueingCompletingJobRepository, QueueingJobRepository
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobRecord
from vesper.domain.query import JobQuery
from vesper.domain.queues import QueueChange, QueueSettings, Rate
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    LEASE,
    T0,
    StoreFixtures,
    all_jobs,
    at,
    claim,
    ids,
    new_job,
    ref,
    submit,
)


def _by_name(jobs: QueueingJobRepository) -> dict[str, QueueSettings]:
    return {s.name: s for s in jobs.queue_settings()}


class QueueClaimContract(StoreFixtures):
    def test_submit_keeps_queue_and_concurrency_key(self, queueing: QueueingJobRepository) -> None:
        [job] = submit(queueing, new_job(queue="email", concurrency_key="tenant-7"))
        [plain] = submit(queueing, new_job())
        assert (job.queue, job.concurrency_key) == ("email", "tenant-7")
        assert queueing.get(job.id) == job
        assert (plain.queue, plain.concurrency_key) == ("default", None)

    def test_claim_takes_only_the_given_queues(self, queueing: QueueingJobRepository) -> None:
        email = submit(queueing, *(new_job(queue="email") for _ in range(3)))
        submit(queueing, *(new_job(queue="media") for _ in range(2)), new_job())
        claimed = claim(queueing, now=at(1), queues=["email"])
        assert sorted(ids(claimed)) == sorted(ids(email))
        assert claim(queueing, now=at(1), queues=["nowhere"]) == []
        both = claim(queueing, now=at(1), queues=["media", "default"])
        assert sorted(j.queue for j in both) == ["default", "media", "media"]

    def test_claim_filters_by_types_and_queues_together(
        self, queueing: QueueingJobRepository
    ) -> None:
        submit(
            queueing,
            new_job("a", queue="q1"),
            new_job("b", queue="q1"),
            new_job("a", queue="q2"),
        )
        [taken] = claim(queueing, now=at(1), types=["a"], queues=["q1"])
        assert (taken.type, taken.queue) == ("a", "q1")
        assert claim(queueing, now=at(1), types=["c"], queues=["q1", "q2"]) == []
        assert claim(queueing, now=at(1), types=["a"], queues=[]) == []

    def test_claim_without_queues_takes_every_queue_in_claim_order(
        self, queueing: QueueingJobRepository
    ) -> None:
        created = submit(
            queueing,
            new_job(queue="q1", priority=1),
            new_job(queue="q2", priority=9),
            new_job(priority=5),
        )
        claimed = claim(queueing, now=at(1))
        assert ids(claimed) == [created[1].id, created[2].id, created[0].id]

    def test_claim_from_one_queue_keeps_claim_order(self, queueing: QueueingJobRepository) -> None:
        created = submit(
            queueing,
            *(new_job(queue="q", priority=p, run_at=at(-s)) for p, s in [(1, 1), (3, 2), (3, 5)]),
            new_job(queue="other", priority=10),
        )
        assert ids(claim(queueing, now=at(1), queues=["q"])) == [
            created[2].id,
            created[1].id,
            created[0].id,
        ]

    def test_find_filters_by_queue(self, queueing: QueueingJobRepository) -> None:
        email = submit(queueing, new_job(queue="email"), new_job(queue="email"))
        submit(queueing, new_job())
        found = all_jobs(queueing, JobQuery(queue="email", limit=1))
        assert sorted(ids(found)) == sorted(ids(email))


class QueuePauseContract(StoreFixtures):
    def test_paused_queue_is_not_claimed_and_resume_drains_it(
        self, queueing: QueueingJobRepository
    ) -> None:
        held = submit(queueing, *(new_job(queue="q") for _ in range(3)))
        [other] = submit(queueing, new_job(queue="r"))
        queueing.configure_queue("q", QueueChange(paused=True))
        assert ids(claim(queueing, now=at(1))) == [other.id]
        assert claim(queueing, now=at(1), queues=["q"]) == []
        queueing.configure_queue("q", QueueChange(paused=False))
        assert sorted(ids(claim(queueing, now=at(2), queues=["q"]))) == sorted(ids(held))

    def test_a_queue_without_jobs_can_be_paused_before_they_come(
        self, queueing: QueueingJobRepository
    ) -> None:
        queueing.configure_queue("later", QueueChange(paused=True))
        submit(queueing, new_job(queue="later"))
        assert claim(queueing, now=at(1)) == []
        assert claim(queueing, now=at(1), queues=["later"]) == []


class QueueSettingsContract(StoreFixtures):
    def test_settings_round_trip_and_null_clears(self, queueing: QueueingJobRepository) -> None:
        change = QueueChange(
            paused=True, concurrency=5, rate="100/1m", key_concurrency=1, aging="5m"
        )
        stored = queueing.configure_queue("email", change)
        expected = QueueSettings(
            name="email",
            paused=True,
            concurrency=5,
            rate=Rate(limit=100, period=timedelta(minutes=1)),
            key_concurrency=1,
            aging=timedelta(minutes=5),
        )
        assert stored == expected
        assert _by_name(queueing) == {"email": expected}
        cleared = queueing.configure_queue("email", QueueChange(concurrency=None, rate=None))
        assert cleared == QueueSettings(
            name="email", paused=True, key_concurrency=1, aging=timedelta(minutes=5)
        )
        assert _by_name(queueing)["email"] == cleared

    def test_change_with_a_bad_value_names_the_field_and_changes_nothing(
        self, queueing: QueueingJobRepository
    ) -> None:
        queueing.configure_queue("q", QueueChange(concurrency=2))
        for change, field in [
            (QueueChange(concurrency=0), "concurrency"),
            (QueueChange(rate="fast"), "rate"),
            (QueueChange(aging="soon"), "aging"),
            (QueueChange(key_concurrency=True), "key_concurrency"),
        ]:
            with pytest.raises(InvalidRequest) as raised:
                queueing.configure_queue("q", change)
            assert raised.value.field == field
        with pytest.raises(InvalidRequest):
            queueing.configure_queue("bad name!", QueueChange(paused=True))
        assert _by_name(queueing) == {"q": QueueSettings(name="q", concurrency=2)}

    def test_queue_states_count_by_status_with_due_types(
        self, queueing: QueueingJobRepository
    ) -> None:
        submit(
            queueing,
            new_job("a", queue="q", run_at=at(-3)),
            new_job("b", queue="q", run_at=at(-1)),
            new_job("c", queue="q", run_at=at(100)),  # not due
            new_job("a", queue="r"),
        )
        claim(queueing, now=T0, queues=["r"])
        queueing.configure_queue("idle", QueueChange(concurrency=1))
        states = {s.name: s for s in queueing.queue_states(now=T0)}
        assert sorted(states) == ["idle", "q", "r"]
        q = states["q"]
        assert q.counts[Status.PENDING] == 3
        assert q.due_types == ("a", "b")
        assert q.oldest_due_age == timedelta(seconds=3)
        assert states["r"].counts[Status.PROCESSING] == 1
        assert states["r"].due_types == ()
        assert states["idle"].settings.concurrency == 1
        assert sum(states["idle"].counts.values()) == 0


class QueueLimitContract(StoreFixtures):
    def test_concurrency_caps_the_queues_processing_jobs(
        self, queueing: QueueingJobRepository
    ) -> None:
        submit(queueing, *(new_job(queue="q") for _ in range(5)), new_job(queue="free"))
        queueing.configure_queue("q", QueueChange(concurrency=2))
        first = claim(queueing, now=at(1), queues=["q"], limit=5)
        assert len(first) == 2
        assert claim(queueing, now=at(1), queues=["q"]) == []
        assert [j.queue for j in claim(queueing, now=at(1))] == ["free"]  # others unaffected
        queueing.complete([ref(first[0])], now=at(2))
        assert len(claim(queueing, now=at(2), queues=["q"], limit=5)) == 1

    def test_complete_and_claim_keeps_a_queues_limit(self, queueing: QueueingJobRepository) -> None:
        """A worker's batch completed and its next claim from a limited queue: the
        completions free their places first, and a batch whose leases were all lost
        claims nothing."""
        if not queueing.capabilities.complete_and_claim:
            pytest.skip("the store offers no complete_and_claim (capabilities)")
        completing = cast(QueueingCompletingJobRepository, queueing)
        submit(queueing, *(new_job(queue="q") for _ in range(6)))
        queueing.configure_queue("q", QueueChange(concurrency=2))
        first = claim(queueing, now=at(1), queues=["q"], limit=5)
        assert len(first) == 2

        def batch(leases: list[JobRecord], now: int) -> tuple[list[JobRecord], list[JobRecord]]:
            return completing.complete_and_claim(
                [ref(j) for j in leases],
                worker_id="w1",
                limit=5,
                lease=LEASE,
                queues=["q"],
                now=at(now),
            )

        done, second = batch(first[:1], 2)
        assert (ids(done), len(second)) == ([first[0].id], 1)  # one place freed: one taken
        assert all(j.status is Status.PROCESSING and j.queue == "q" for j in second)
        assert batch(first[:1], 3) == ([], [])  # completed already: its lease is gone
        done, claimed = batch([first[1], *second], 4)
        assert (len(done), len(claimed)) == (2, 2)
        assert len(all_jobs(queueing, JobQuery(status=Status.PROCESSING))) == 2

    def test_key_concurrency_takes_one_job_per_key_in_claim_order(
        self, queueing: QueueingJobRepository
    ) -> None:
        keys = ["a", "a", "a", "b", "b", None, "c", None]
        created = submit(
            queueing,
            *(new_job(queue="q", concurrency_key=k, run_at=at(i - 10)) for i, k in enumerate(keys)),
        )
        queueing.configure_queue("q", QueueChange(key_concurrency=1))
        claimed = claim(queueing, now=at(1), queues=["q"], limit=10)
        # the first of each key, and every job without a key
        assert ids(claimed) == [created[i].id for i in (0, 3, 5, 6, 7)]
        assert claim(queueing, now=at(1), queues=["q"]) == []
        queueing.complete([ref(claimed[0])], now=at(2))  # key a frees one place
        assert ids(claim(queueing, now=at(2), queues=["q"])) == [created[1].id]

    def test_rate_is_a_sliding_window(self, queueing: QueueingJobRepository) -> None:
        submit(queueing, *(new_job(queue="q") for _ in range(20)))
        queueing.configure_queue("q", QueueChange(rate="3/10s"))
        assert len(claim(queueing, now=at(0), queues=["q"], limit=2)) == 2
        assert len(claim(queueing, now=at(5), queues=["q"], limit=5)) == 1
        assert claim(queueing, now=at(9.9), queues=["q"]) == []
        # the claims at 0 leave the window after 10 s; the one at 5 stays until 15
        assert len(claim(queueing, now=at(10.001), queues=["q"], limit=5)) == 2
        assert claim(queueing, now=at(14.9), queues=["q"]) == []
        assert len(claim(queueing, now=at(15.001), queues=["q"], limit=5)) == 1

    def test_limits_hold_for_a_claim_of_every_queue(self, queueing: QueueingJobRepository) -> None:
        submit(queueing, *(new_job(queue="q") for _ in range(4)), new_job())
        queueing.configure_queue("q", QueueChange(concurrency=1))
        claimed = claim(queueing, now=at(1), limit=10)
        assert sorted(j.queue for j in claimed) == ["default", "q"]

    def test_a_busy_queue_leaves_a_limited_queue_its_share(
        self, queueing: QueueingJobRepository
    ) -> None:
        """In a claim of several queues the limited ones come first, each within its
        limits, and the others fill the rest: a queue without limits and with a backlog
        (claimed first, it would fill every claim) cannot leave a limited one nothing."""
        submit(queueing, *(new_job(priority=9) for _ in range(6)))
        submit(queueing, *(new_job(queue="q") for _ in range(3)))
        queueing.configure_queue("q", QueueChange(concurrency=2))
        first = claim(queueing, now=at(1), limit=3)
        assert [j.queue for j in first] == ["q", "q", "default"]
        assert [j.queue for j in claim(queueing, now=at(1), limit=2)] == ["default"] * 2
        if not queueing.capabilities.complete_and_claim:
            return
        completing = cast(QueueingCompletingJobRepository, queueing)
        done, claimed = completing.complete_and_claim(
            [ref(first[0])], worker_id="w1", limit=2, lease=LEASE, now=at(2)
        )
        assert ids(done) == [first[0].id]
        assert [j.queue for j in claimed] == ["q", "default"]  # the place it freed

    def test_aging_orders_by_effective_priority(self, queueing: QueueingJobRepository) -> None:
        [old] = submit(queueing, new_job(queue="q", priority=0, run_at=at(-7.5)))
        [urgent] = submit(queueing, new_job(queue="q", priority=5, run_at=at(0)))
        [newer] = submit(queueing, new_job(queue="q", priority=6, run_at=at(0)))
        queueing.configure_queue("q", QueueChange(aging="1s"))
        # at 0: old's effective priority is 0 + 7 = 7, above 6 and 5
        claimed = claim(queueing, now=at(0), queues=["q"])
        assert ids(claimed) == [old.id, newer.id, urgent.id]
        assert claimed[0].priority == 0  # its own priority is unchanged

    def test_without_aging_the_old_low_priority_job_waits(
        self, queueing: QueueingJobRepository
    ) -> None:
        [old] = submit(queueing, new_job(queue="q", priority=0, run_at=at(-100)))
        [urgent] = submit(queueing, new_job(queue="q", priority=5, run_at=at(0)))
        assert ids(claim(queueing, now=at(0), queues=["q"])) == [urgent.id, old.id]

    def test_aging_caps_effective_priority_at_ten(self, queueing: QueueingJobRepository) -> None:
        [old] = submit(queueing, new_job(queue="q", priority=0, run_at=at(-1000)))
        [top] = submit(queueing, new_job(queue="q", priority=10, run_at=at(-1)))
        queueing.configure_queue("q", QueueChange(aging="1s"))
        # both at 10: run_at decides, and the old one is older
        assert ids(claim(queueing, now=at(0), queues=["q"])) == [old.id, top.id]

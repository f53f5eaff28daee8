"""JobRepository.submit and get: insertion, exact round trips, idempotency, batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vesper.application.ports import JobRepository
from vesper.domain.errors import IdempotencyConflict, InvalidRequest, JobNotFound
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobQuery
from vesper.domain.states import Status
from vesper.domain.submission import NewJob
from vesper.testing.fixtures import (
    LEASE,
    T0,
    StoreFixtures,
    all_jobs,
    at,
    claim,
    claim_one,
    ids,
    new_job,
    ref,
    submit,
)

PAYLOAD = {
    "text": "héllo wörld — 日本語 — 😀",
    "quotes": 'it\'s "quoted" \\ back\\slash\nnew line\ttab',
    "numbers": [0, -7, 2**53, 2.5, 0.1, -1.25e-5],
    "flags": [True, False, None],
    "nested": {"deeper": {"deepest": [[], {}, [1, [2, [3]]]]}, "empty": ""},
    "ключ": {"😀": "value"},
}


class SubmitContract(StoreFixtures):
    # -- submit -----------------------------------------------------------------------

    def test_submit_inserts_pending_job_as_materialized(self, jobs: JobRepository) -> None:
        new = new_job("email", priority=4, payload={"to": "a@example.com"}, max_retries=5)
        [submitted] = jobs.submit([new], now=T0)
        assert submitted.created
        assert submitted.job == new.materialize(now=T0, seq=submitted.job.seq)
        assert submitted.job.status is Status.PENDING
        assert jobs.get(new.id) == submitted.job

    def test_submit_without_run_at_is_due_now_plus_delay(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(delay=timedelta(seconds=90, microseconds=7)), now=T0)
        assert job.run_at == T0 + timedelta(seconds=90, microseconds=7)
        [immediate] = submit(jobs, new_job(), now=T0)
        assert immediate.run_at == T0

    def test_submit_with_run_at_keeps_it(self, jobs: JobRepository) -> None:
        run_at = at(3600.000001)
        [job] = submit(jobs, new_job(run_at=run_at), now=T0)
        assert job.run_at == run_at

    def test_submit_batch_inserts_in_sequence_order(self, jobs: JobRepository) -> None:
        batch = [new_job(f"t{i}") for i in range(5)]
        created = submit(jobs, *batch, now=T0)
        assert ids(created) == ids_of(batch)
        seqs = [job.seq for job in created]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        later = submit(jobs, new_job("later"), now=at(1))
        assert later[0].seq > seqs[-1]
        assert ids(all_jobs(jobs)) == [later[0].id, *reversed(ids_of(batch))]

    def test_submit_empty_batch_inserts_nothing(self, jobs: JobRepository) -> None:
        assert jobs.submit([], now=T0) == []
        assert all_jobs(jobs) == []

    def test_submit_batch_results_match_get(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(priority=i) for i in range(3)), now=T0)
        assert [jobs.get(job.id) for job in created] == created

    def test_submit_batch_keeps_each_jobs_optional_fields(self, jobs: JobRepository) -> None:
        # set on some jobs of a batch and not on others (a store may send a column that
        # is unset for the whole batch differently): each job keeps its own
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

        def varied() -> list[NewJob]:
            return [
                new_job("at", run_at=at(60)),
                new_job("plain"),
                new_job("delayed", delay=timedelta(seconds=30)),
                new_job("limited", timeout=timedelta(seconds=5)),
                new_job("traced", trace_context=trace),
            ]

        batches = (
            varied(),
            [*varied(), new_job("keyed", key="k-opt")],
            [new_job("plain"), new_job("plain")],  # every optional field unset
        )
        for batch in batches:
            created = submit(jobs, *batch, now=T0)
            assert [jobs.get(job.id) for job in created] == created
            by_type = {job.type: job for job in created}
            plain = by_type["plain"]
            assert (plain.run_at, plain.timeout, plain.trace_context) == (T0, None, None)
            assert plain.fingerprint == ""
            if "at" in by_type:
                assert by_type["at"].run_at == at(60)
                assert by_type["delayed"].run_at == at(30)
                assert by_type["limited"].timeout == timedelta(seconds=5)
                assert by_type["traced"].trace_context == trace
            if "keyed" in by_type:
                assert by_type["keyed"].idempotency_key == "k-opt"
                assert by_type["keyed"].fingerprint != ""

    # -- exact round trips ------------------------------------------------------------

    def test_submit_round_trips_datetimes_with_microseconds(self, jobs: JobRepository) -> None:
        now = datetime(2031, 7, 8, 9, 10, 11, 999999, tzinfo=UTC)
        run_at = datetime(2031, 7, 8, 9, 10, 12, 1, tzinfo=UTC)
        [job] = submit(jobs, new_job(run_at=run_at), now=now)
        stored = jobs.get(job.id)
        assert (stored.created_at, stored.updated_at, stored.run_at) == (now, now, run_at)
        for moment in (stored.created_at, stored.updated_at, stored.run_at):
            assert moment.utcoffset() == timedelta(0), f"{moment!r} is not aware UTC"

    def test_submit_round_trips_payload_exactly(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(payload=PAYLOAD), now=T0)
        assert jobs.get(job.id).payload == PAYLOAD
        assert job.payload == PAYLOAD

    def test_submit_round_trips_payload_with_nul_character(self, jobs: JobRepository) -> None:
        payload = {"nul": "before\u0000after", "key\u0000": 1}
        [job] = submit(jobs, new_job(payload=payload), now=T0)
        assert jobs.get(job.id).payload == payload

    def test_submit_round_trips_payload_edge_values(self, jobs: JobRepository) -> None:
        payload = {
            # a lone surrogate is refused before a store sees it (prepare); a pair is not
            "astral": "\U0001f600",
            "\U0001f600": "in a key",
            "separators": "\u2028\u2029",
            "big_int": 10**30,
            "big_float": 1e300,
            "tiny_float": 5e-324,
        }
        [job] = submit(jobs, new_job(payload=payload), now=T0)
        stored = jobs.get(job.id).payload
        assert stored == payload
        assert {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in payload.items()}

    def test_submit_round_trips_characters_beyond_the_basic_plane(
        self, jobs: JobRepository
    ) -> None:
        # four bytes in UTF-8: a database whose "utf8" stops at three (MySQL's utf8mb3)
        # refuses or mangles them
        [job] = submit(jobs, new_job("mail-\U0001f4e7", payload={"\U0001f600": "\U00010348"}))
        stored = jobs.get(job.id)
        assert (stored.type, stored.payload) == ("mail-\U0001f4e7", {"\U0001f600": "\U00010348"})
        assert ids(all_jobs(jobs, JobQuery(type="mail-\U0001f4e7"))) == [job.id]

    @pytest.mark.parametrize(
        "fields",
        [
            {"job_type": "x\ud800y"},
            {"payload": {"v": "x\ud800y"}},
            {"payload": {"x\udc00y": 1}},
            {"key": "x\ud800y"},
        ],
        ids=["type", "payload value", "payload key", "idempotency key"],
    )
    def test_lone_surrogates_never_reach_a_store(
        self, jobs: JobRepository, fields: dict[str, Any]
    ) -> None:
        # what the ports promise a store: valid Unicode only (prepare refuses the rest)
        with pytest.raises(InvalidRequest):
            new_job(**fields)
        assert all_jobs(jobs) == []

    def test_submit_round_trips_every_optional_field(self, jobs: JobRepository) -> None:
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        new = new_job(
            "report",
            priority=10,
            key='order-42 / key ~!"#$%',
            max_retries=0,
            timeout=timedelta(seconds=90, microseconds=123456),
            trace_context=trace,
        )
        [job] = submit(jobs, new, now=T0)
        stored = jobs.get(new.id)
        assert stored == new.materialize(now=T0, seq=job.seq)
        assert stored.timeout == timedelta(seconds=90, microseconds=123456)
        assert stored.trace_context == trace
        assert stored.idempotency_key == 'order-42 / key ~!"#$%'
        assert stored.fingerprint == new.fingerprint

    def test_submit_round_trips_absent_optional_fields_as_none(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(), now=T0)
        stored = jobs.get(job.id)
        assert stored.timeout is None
        assert stored.trace_context is None
        assert stored.idempotency_key is None
        assert stored.lease is None
        assert (stored.started_at, stored.finished_at) == (None, None)
        assert stored.error == ""

    def test_claim_round_trips_lease_exactly(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        now = at(1.000001)
        claimed = claim_one(jobs, now=now, worker_id="worker-ü-1")
        stored = jobs.get(claimed.id)
        assert stored == claimed
        assert stored.lease is not None
        assert stored.lease.expires_at == now + LEASE
        assert stored.lease.worker_id == "worker-ü-1"
        assert stored.started_at == now

    # -- idempotency ------------------------------------------------------------------

    def test_submit_replay_returns_bound_job_not_created(self, jobs: JobRepository) -> None:
        [first] = jobs.submit([new_job(key="k1", payload={"n": 1})], now=T0)
        [replay] = jobs.submit([new_job(key="k1", payload={"n": 1})], now=at(5))
        assert first.created
        assert not replay.created
        assert replay.job == first.job
        assert len(all_jobs(jobs)) == 1

    def test_submit_same_key_other_body_raises_idempotency_conflict(
        self, jobs: JobRepository
    ) -> None:
        [first] = submit(jobs, new_job(key="k1", payload={"n": 1}), now=T0)
        other = new_job(key="k1", payload={"n": 2})
        with pytest.raises(IdempotencyConflict):
            jobs.submit([other], now=at(1))
        assert all_jobs(jobs) == [first]
        with pytest.raises(JobNotFound):
            jobs.get(other.id)

    def test_submit_key_stays_bound_after_job_finishes(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(key="k1"), now=T0)
        claimed = claim_one(jobs, now=at(1))
        [done] = jobs.complete([ref(claimed)], now=at(2))
        [replay] = jobs.submit([new_job(key="k1")], now=at(3))
        assert not replay.created
        assert replay.job == done
        assert replay.job.status is Status.DONE
        with pytest.raises(IdempotencyConflict):
            jobs.submit([new_job(key="k1", priority=1)], now=at(4))
        assert len(all_jobs(jobs)) == 1

    def test_submit_same_key_twice_in_one_batch_inserts_one_job(self, jobs: JobRepository) -> None:
        first, again = new_job(key="k1"), new_job(key="k1")
        results = jobs.submit([first, new_job(), again], now=T0)
        assert [r.created for r in results] == [True, True, False]
        assert results[2].job == results[0].job
        assert results[0].job.id == first.id
        assert len(all_jobs(jobs)) == 2

    def test_submit_keys_are_distinct_per_key(self, jobs: JobRepository) -> None:
        results = jobs.submit([new_job(key="a"), new_job(key="b"), new_job(key="A")], now=T0)
        assert all(r.created for r in results)
        assert len(all_jobs(jobs)) == 3

    def test_submit_keys_differing_only_in_spaces_or_case_are_distinct(
        self, jobs: JobRepository
    ) -> None:
        # a PAD SPACE or case-insensitive collation would bind all of these to one job
        keys = ["k", "k ", "k  ", " k", "K"]
        created = [jobs.submit([new_job(key=key)], now=T0)[0] for key in keys]
        assert [r.created for r in created] == [True] * len(keys)
        assert len({r.job.id for r in created}) == len(keys)
        assert [jobs.get(r.job.id).idempotency_key for r in created] == keys
        replays = [jobs.submit([new_job(key=key)], now=at(1))[0] for key in keys]
        assert [(r.created, r.job.id) for r in replays] == [(False, r.job.id) for r in created]

    def test_submit_types_differing_only_in_trailing_spaces_are_distinct(
        self, jobs: JobRepository
    ) -> None:
        plain, padded = submit(jobs, new_job("email"), new_job("email "), now=T0)
        assert (jobs.get(plain.id).type, jobs.get(padded.id).type) == ("email", "email ")
        assert ids(all_jobs(jobs, JobQuery(type="email "))) == [padded.id]
        assert ids(claim(jobs, now=at(1), types=["email"])) == [plain.id]

    # -- batch atomicity --------------------------------------------------------------

    def test_submit_batch_with_conflicting_key_inserts_nothing(self, jobs: JobRepository) -> None:
        [bound] = submit(jobs, new_job(key="taken", payload={"v": 1}), now=T0)
        batch = [new_job("a"), new_job("b", key="taken", payload={"v": 2}), new_job("c")]
        with pytest.raises(IdempotencyConflict):
            jobs.submit(batch, now=at(1))
        assert all_jobs(jobs) == [bound]
        for new in batch:
            with pytest.raises(JobNotFound):
                jobs.get(new.id)

    def test_submit_batch_with_conflict_inside_it_inserts_nothing(
        self, jobs: JobRepository
    ) -> None:
        batch = [new_job(key="k", payload={"v": 1}), new_job(), new_job(key="k", payload={"v": 2})]
        with pytest.raises(IdempotencyConflict):
            jobs.submit(batch, now=T0)
        assert all_jobs(jobs) == []

    def test_submit_batch_mixing_replay_and_new_jobs(self, jobs: JobRepository) -> None:
        [bound] = submit(jobs, new_job(key="k"), now=T0)
        fresh = new_job("fresh")
        results = jobs.submit([new_job(key="k"), fresh], now=at(1))
        assert [r.created for r in results] == [False, True]
        assert results[0].job == bound
        assert jobs.get(fresh.id) == results[1].job

    # -- get --------------------------------------------------------------------------

    def test_get_unknown_raises_job_not_found(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        unknown = new_job().id
        with pytest.raises(JobNotFound):
            jobs.get(unknown)

    # -- the store clock (now=None) ---------------------------------------------------

    def test_now_is_aware_utc_close_to_host_clock(self, jobs: JobRepository) -> None:
        now = jobs.now()
        assert now.utcoffset() == timedelta(0)
        assert abs(now - datetime.now(UTC)) < timedelta(seconds=60)

    def test_submit_and_claim_without_now_use_store_clock(self, jobs: JobRepository) -> None:
        before = jobs.now()
        [due] = submit_at_store_clock(jobs, new_job("due"))
        after = jobs.now()
        assert before <= due.created_at <= after
        assert before <= due.run_at <= after
        far = jobs.now() + timedelta(hours=1)
        submit_at_store_clock(jobs, new_job("later", run_at=far))
        claimed = jobs.claim(worker_id="w1", limit=10, lease=LEASE)
        assert ids(claimed) == [due.id]
        started, lease = claimed[0].started_at, claimed[0].lease
        assert started is not None
        assert lease is not None
        assert after <= started <= jobs.now()
        assert lease.expires_at == started + LEASE


def submit_at_store_clock(jobs: JobRepository, *new: NewJob) -> list[JobRecord]:
    """Submit with `now` left to the store's clock."""
    return [s.job for s in jobs.submit(list(new))]


def ids_of(batch: Sequence[NewJob]) -> list[JobId]:
    return [new.id for new in batch]

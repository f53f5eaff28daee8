"""The checker is the oracle of every row, so it is tested first: a clean history has no
violation, and each injected defect is counted under its invariant."""

from __future__ import annotations

import copy
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.faults.checker import Options, check

T0 = datetime(2025, 11, 28, tzinfo=UTC)
SECOND = 1_000_000_000


def history(
    n_jobs: int, n_pids: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A fault-free run: jobs, a ledger of sequential executions per pid, 201 responses."""
    rng = random.Random(seed)
    jobs, ledger, responses = [], [], []
    clock = dict.fromkeys(range(1, n_pids + 1), 0)
    for seq in range(n_jobs):
        job_id = str(uuid.UUID(int=rng.getrandbits(128)))
        pid = rng.randint(1, n_pids)
        start = clock[pid] + rng.randint(1, 10) * SECOND // 10
        end = start + rng.randint(1, 20) * SECOND // 10
        clock[pid] = end
        claimed = T0 + timedelta(seconds=start / SECOND)
        token = str(uuid.uuid4())
        key = f"k{seq}"
        jobs.append(
            {
                "job_id": job_id,
                "status": "done",
                "retries": 0,
                "attempts": 1,
                "max_retries": 3,
                "idempotency_key": key,
                "priority": rng.randint(0, 10),
                "seq": seq,
                "run_at": T0,
                "created_at": T0,
                "started_at": claimed,
                "finished_at": claimed + timedelta(seconds=(end - start) / SECOND),
            }
        )
        common = {"job_id": job_id, "pid": pid, "token": token, "claimed_at": claimed.isoformat()}
        ledger += [
            {"event": "start", "mono": start, **common},
            {"event": "end", "mono": end, **common},
        ]
        responses.append({"status": 201, "job_id": job_id, "key": key, "body": "{}"})
    return jobs, ledger, responses


histories = st.builds(
    history,
    n_jobs=st.integers(1, 40),
    n_pids=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)


@given(histories)
def test_a_clean_history_has_no_violation(h: Any) -> None:
    jobs, ledger, responses = h
    report = check(jobs, ledger, responses, [])
    assert report.violations() == {}
    assert report.counts["I4_duplicate_starts"] == 0


@given(histories, st.randoms())
def test_the_checker_is_pure_and_ignores_ledger_order(h: Any, rnd: random.Random) -> None:
    jobs, ledger, responses = h
    before = copy.deepcopy((jobs, ledger, responses))
    first = check(jobs, ledger, responses, [])
    assert (jobs, ledger, responses) == before
    shuffled = ledger[:]
    rnd.shuffle(shuffled)
    assert check(jobs, shuffled, responses, []) == first


@given(histories, st.data())
def test_an_acknowledged_job_without_a_row_is_an_i1_violation(h: Any, data: st.DataObject) -> None:
    jobs, ledger, responses = h
    lost = data.draw(st.integers(0, len(jobs) - 1))
    del jobs[lost]
    assert check(jobs, ledger, responses, []).counts["I1_acked_missing"] == 1


@given(histories, st.data(), st.sampled_from(["pending", "processing", "failed"]))
def test_a_job_left_unfinished_is_an_i2_violation(h: Any, data: st.DataObject, status: str) -> None:
    jobs, ledger, responses = h
    jobs[data.draw(st.integers(0, len(jobs) - 1))]["status"] = status
    assert check(jobs, ledger, responses, []).counts["I2_unfinished"] == 1


@given(histories, st.data())
def test_a_second_concurrent_execution_is_i3_i4_and_i5(h: Any, data: st.DataObject) -> None:
    jobs, ledger, responses = h
    start = data.draw(st.sampled_from([e for e in ledger if e["event"] == "start"]))
    twin = {**start, "pid": 99, "token": "t2", "mono": start["mono"] + 1}
    ledger += [twin, {**twin, "event": "end", "mono": start["mono"] + 2}]
    counts = check(jobs, ledger, responses, []).counts
    assert counts["I3_overlaps"] == 1
    assert counts["I4_duplicate_starts"] == 1
    assert counts["I5_unexplained_reruns"] == 1
    assert counts["I6_double_recorded"] == 1


@given(histories, st.data())
def test_a_rerun_of_a_killed_processs_open_job_is_explained(h: Any, data: st.DataObject) -> None:
    jobs, ledger, responses = h
    start = data.draw(st.sampled_from([e for e in ledger if e["event"] == "start"]))
    # the process was killed mid-job: its end line never came; another pid re-ran it
    ledger.remove(next(e for e in ledger if e["event"] == "end" and e["token"] == start["token"]))
    kill_at = start["mono"] + 1
    fault = {"kind": "kill", "pid": start["pid"], "mono": kill_at, "db_now": T0}
    claimed = T0 + timedelta(seconds=5)
    rerun = {
        **start,
        "pid": 99,
        "token": "t2",
        "mono": kill_at + 10**12,
        "claimed_at": claimed.isoformat(),
    }
    ledger += [rerun, {**rerun, "event": "end", "mono": rerun["mono"] + 1}]
    report = check(jobs, ledger, responses, [fault], Options(recovery_bound=6.0))
    assert report.counts["I3_overlaps"] == 0
    assert report.counts["I5_unexplained_reruns"] == 0
    assert report.counts["I7_over_bound"] == 0
    assert report.figures["I5_reruns"] == 1
    assert report.figures["I7_max_recovery_s"] == 5.0
    late = check(jobs, ledger, responses, [fault], Options(recovery_bound=4.0))
    assert late.counts["I7_over_bound"] == 1


@given(histories, st.data())
def test_a_paused_processs_overlap_is_excused(h: Any, data: st.DataObject) -> None:
    jobs, ledger, responses = h
    start = data.draw(st.sampled_from([e for e in ledger if e["event"] == "start"]))
    fault = {
        "kind": "stop",
        "pid": start["pid"],
        "mono": start["mono"],
        "db_now": T0,
        "overlap_ok": True,
    }
    twin = {**start, "pid": 99, "token": "t2", "mono": start["mono"] + 1}
    ledger += [twin]
    report = check(jobs, ledger, responses, [fault])
    assert report.counts["I3_overlaps"] == 0
    assert report.figures["I3_overlaps_excused"] == 1


@given(histories, st.data())
def test_two_rows_or_two_jobs_for_one_key_are_i9_violations(h: Any, data: st.DataObject) -> None:
    jobs, ledger, responses = h
    index = data.draw(st.integers(0, len(jobs) - 1))
    twin = {**jobs[index], "job_id": str(uuid.uuid4())}
    jobs.append(twin)
    responses.append(
        {"status": 200, "job_id": twin["job_id"], "key": twin["idempotency_key"], "body": "{}"}
    )
    counts = check(jobs, ledger, responses, []).counts
    assert counts["I9_keys_with_rows_over_1"] == 1
    assert counts["I9_keys_with_jobs_over_1"] == 1


@given(st.lists(st.integers(0, 10), min_size=2, max_size=30), st.randoms())
def test_a_single_claimer_out_of_priority_order_is_an_i10_violation(
    priorities: list[int], rnd: random.Random
) -> None:
    jobs = [
        {"job_id": f"j{i}", "status": "done", "priority": p, "run_at": T0, "seq": i}
        for i, p in enumerate(priorities)
    ]
    ordered = sorted(jobs, key=lambda j: (-j["priority"], j["seq"]))
    ledger = [
        {"event": "start", "job_id": j["job_id"], "pid": 1, "token": "t", "mono": n}
        for n, j in enumerate(ordered)
    ]
    assert check(jobs, ledger, [], [], Options(order_pid=1)).counts["I10_out_of_order"] == 0
    shuffled = ordered[:]
    rnd.shuffle(shuffled)
    swapped = [
        {"event": "start", "job_id": j["job_id"], "pid": 1, "token": "t", "mono": n}
        for n, j in enumerate(shuffled)
    ]
    wrong = sum(
        1
        for a, b in zip(shuffled, ordered, strict=True)
        if (a["priority"], a["seq"]) != (b["priority"], b["seq"])
    )
    assert check(jobs, swapped, [], [], Options(order_pid=1)).counts["I10_out_of_order"] == wrong


@given(
    st.sampled_from([500, 502, 504]),
    st.sampled_from(["Traceback (most", 'File "/x.py"', "psycopg.errors", "postgresql://u@h/db"]),
)
def test_5xx_and_leaky_bodies_are_i11_violations(status: int, leak: str) -> None:
    responses = [
        {"status": 503, "body": '{"error":"unavailable"}'},
        {"status": status, "body": "{}"},
        {"status": 400, "body": f'{{"error": "{leak}"}}'},
    ]
    counts = check([], [], responses, []).counts
    assert counts["I11_5xx_not_503"] == 1
    assert counts["I11_leaky_bodies"] == 1


def test_long_transactions_and_deadlocks_are_i11_violations() -> None:
    options = Options(
        activity=[
            {"state": "idle in transaction", "state_age": 1.5, "xact_age": 1.5},
            {"state": "active", "state_age": 0.1, "xact_age": 6.0},
            {"state": "idle", "state_age": 30.0, "xact_age": None},
            # an idle listener reading a NOTIFY: PostgreSQL dates that instant's
            # transaction from the session's last statement; no client transaction
            {"state": "idle", "state_age": 187.5, "xact_age": 187.5},
        ],
        pg_log=["ERROR:  deadlock detected", "LOG:  checkpoint starting"],
    )
    counts = check([], [], [], [], options).counts
    assert counts["I11_idle_in_transaction_over_1s"] == 1
    assert counts["I11_transaction_over_5s"] == 1
    assert counts["I11_deadlocks"] == 1


def test_starts_after_dlq_are_i8_violations() -> None:
    done_at = T0 + timedelta(seconds=10)
    jobs = [
        {
            "job_id": "j",
            "status": "dlq",
            "finished_at": done_at,
            "priority": 0,
            "seq": 0,
            "run_at": T0,
        }
    ]
    ledger = [
        {
            "event": "start",
            "job_id": "j",
            "pid": 1,
            "token": str(n),
            "mono": n,
            "claimed_at": (T0 + timedelta(seconds=4 * n)).isoformat(),
        }
        for n in range(4)
    ]
    assert check(jobs, ledger, [], []).counts["I8_starts_after_dlq"] == 1


def _run_elsewhere(entry: dict[str, Any], *, at: int) -> list[dict[str, Any]]:
    """Ledger lines of one more execution of `entry`'s job, by another process, at `at`."""
    rerun = {**entry, "event": "start", "pid": 99, "token": "t2", "mono": at}
    return [rerun, {**rerun, "event": "end", "mono": at + 1}]


@given(histories, st.data())
def test_a_kill_between_the_consumers_end_and_the_commit_explains_a_rerun(
    h: Any, data: st.DataObject
) -> None:
    jobs, ledger, responses = h
    end = data.draw(st.sampled_from([e for e in ledger if e["event"] == "end"]))
    fault = {"kind": "kill", "pid": end["pid"], "mono": end["mono"] + 1, "db_now": T0}
    ledger += _run_elsewhere(end, at=end["mono"] + 10)
    counts = check(jobs, ledger, responses, [fault]).counts
    assert counts["I5_unexplained_reruns"] == 0
    assert counts["I6_double_recorded"] == 0  # the first end was never recorded: re-claimed
    assert check(jobs, ledger, responses, []).counts["I5_unexplained_reruns"] == 1


@given(histories, st.data())
def test_a_start_while_a_database_fault_takes_effect_explains_its_rerun(
    h: Any, data: st.DataObject
) -> None:
    jobs, ledger, responses = h
    start = data.draw(st.sampled_from([e for e in ledger if e["event"] == "start"]))
    # pg_ctl was called just before this consumer started (its claim came first), and
    # the server went down just after: the attempt could not be recorded, and re-ran
    fault = {
        "kind": "pg_crash",
        "pid": None,
        "mono": start["mono"] - 1,
        "mono_end": start["mono"] + 1,
        "db_now": T0,
    }
    ledger += _run_elsewhere(start, at=start["mono"] + 5)
    assert check(jobs, ledger, responses, [fault]).counts["I5_unexplained_reruns"] == 0
    # had the server gone down before the consumer started, nothing would explain it
    instant = {**fault, "mono_end": None}
    report = check(jobs, ledger, responses, [instant])
    assert report.counts["I5_unexplained_reruns"] == 1
    assert any(start["job_id"] in note and "pg_crash" in note for note in report.notes)


def test_a_key_freed_by_a_delete_that_began_after_the_insert_is_no_i9_violation() -> None:
    """Soak seed 21: an INSERT began (created_at), waited on a lock while a later DELETE
    freed its key (deleted_at after created_at), then inserted. The rows' own moments
    order them; the statements' start times do not."""
    jobs, ledger, responses = history(2, 1, seed=21)
    old, new = jobs
    new["idempotency_key"] = old["idempotency_key"]
    old["deleted_at"] = T0 + timedelta(seconds=5)
    new["created_at"] = T0 + timedelta(seconds=4)  # its statement began first
    old["row_deleted_at"] = T0 + timedelta(seconds=5.001)
    new["row_inserted_at"] = T0 + timedelta(seconds=5.002)  # its row came after
    assert check(jobs, ledger, responses, []).counts["I9_keys_with_rows_over_1"] == 0
    new["row_inserted_at"] = T0 + timedelta(seconds=5.0005)  # both rows lived at once
    report = check(jobs, ledger, responses, [])
    assert report.counts["I9_keys_with_rows_over_1"] == 1
    assert any(note.startswith(f"key {old['idempotency_key']!r}: ") for note in report.notes)

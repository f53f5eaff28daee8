"""Each soak invariant (tests/faults/invariants.py) on synthetic evidence: a clean history
passes, and the one defect injected is counted under its name."""

from __future__ import annotations

import copy
import uuid
from datetime import timedelta
from typing import Any

from tests.faults.checker import check, executions
from tests.faults.invariants import (
    QueueLimits,
    accounted,
    cancels,
    finished_unchanged,
    queue_limits,
    queue_peaks,
    results,
    retention,
    rolled_back,
    schedule_ticks,
    snoozes,
    waiters,
)
from tests.faults.test_checker import SECOND, T0, history

Row = dict[str, Any]


def job(job_id: str, **fields: Any) -> Row:
    return {
        "job_id": job_id,
        "status": "done",
        "queue": "default",
        "concurrency_key": None,
        "idempotency_key": None,
        "created_at": T0,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=1),
        "deleted_at": None,
        "result": None,
        **fields,
    }


def run(job_id: str, pid: int, start_s: float, end_s: float, **fields: Any) -> list[Row]:
    """A start/end pair in the ledger; the claim time is the start (database clock)."""
    token = fields.pop("token", str(uuid.uuid4()))
    claimed = fields.pop("claimed_at", T0 + timedelta(seconds=start_s))
    common = {"job_id": job_id, "pid": pid, "token": token, "claimed_at": claimed.isoformat()}
    return [
        {"event": "start", "mono": int(start_s * SECOND), **common},
        {"event": "end", "mono": int(end_s * SECOND), **common, **fields},
    ]


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


# -- I12 queue limits -------------------------------------------------------------------


def test_concurrency_within_the_limit_passes_and_one_more_is_caught() -> None:
    a, b, c = ids(3)
    rows = [job(a, queue="q"), job(b, queue="q"), job(c, queue="q")]
    ledger = run(a, 1, 0, 2) + run(b, 2, 1, 3) + run(c, 3, 2, 4)  # never more than 2 at once
    limits = {"q": QueueLimits(concurrency=2)}
    clean = queue_limits(rows, executions(ledger, []), limits)
    assert clean["I12_concurrency_exceeded"] == 0
    ledger = run(a, 1, 0, 2) + run(b, 2, 1, 3) + run(c, 3, 1.5, 4)  # three at 1.5 s
    caught = queue_limits(rows, executions(ledger, []), limits)
    assert caught["I12_concurrency_exceeded"] == 1


def test_other_queues_and_paused_processes_do_not_count_against_a_limit() -> None:
    a, b, c = ids(3)
    rows = [job(a, queue="q"), job(b, queue="other"), job(c, queue="q")]
    ledger = run(a, 1, 0, 2) + run(b, 2, 0, 2) + run(c, 3, 1, 3)
    limits = {"q": QueueLimits(concurrency=1)}
    assert queue_limits(rows, executions(ledger, []), limits)["I12_concurrency_exceeded"] == 1
    paused = queue_limits(rows, executions(ledger, []), limits, paused_pids={1})
    assert paused["I12_concurrency_exceeded"] == 0


def test_per_key_serial_execution() -> None:
    a, b, c = ids(3)
    rows = [
        job(a, queue="q", concurrency_key="tenant-1"),
        job(b, queue="q", concurrency_key="tenant-1"),
        job(c, queue="q", concurrency_key="tenant-2"),
    ]
    serial = run(a, 1, 0, 1) + run(b, 2, 1, 2) + run(c, 3, 0.5, 1.5)
    limits = {"q": QueueLimits(key_concurrency=1)}
    clean = queue_limits(rows, executions(serial, []), limits)
    assert clean["I12_key_concurrency_exceeded"] == 0
    overlapping = run(a, 1, 0, 1) + run(b, 2, 0.9, 2) + run(c, 3, 0.5, 1.5)
    caught = queue_limits(rows, executions(overlapping, []), limits)
    assert caught["I12_key_concurrency_exceeded"] == 1


def test_rate_counts_claims_in_a_sliding_window_of_database_time() -> None:
    jobs = ids(4)
    rows = [job(j, queue="q") for j in jobs]
    limits = {"q": QueueLimits(rate=(2, 1.0))}
    spread = [e for i, j in enumerate(jobs) for e in run(j, 1, i * 0.5, i * 0.5 + 0.1)]
    assert queue_limits(rows, executions(spread, []), limits)["I12_rate_exceeded"] == 0
    bunched = [e for i, j in enumerate(jobs) for e in run(j, 1, i * 0.4, i * 0.4 + 0.1)]
    assert queue_limits(rows, executions(bunched, []), limits)["I12_rate_exceeded"] >= 1


def test_the_peaks_show_how_close_a_queue_came_to_its_limits() -> None:
    a, b, c = ids(3)
    rows = [
        job(a, queue="q", concurrency_key="t1"),
        job(b, queue="q", concurrency_key="t1"),
        job(c, queue="q", concurrency_key="t2"),
    ]
    ledger = run(a, 1, 0, 2) + run(b, 2, 2, 3) + run(c, 3, 0.5, 2.5)
    limits = {"q": QueueLimits(concurrency=3, key_concurrency=1, rate=(2, 1.0))}
    assert queue_peaks(rows, executions(ledger, []), limits) == {
        "q_peak_running": 2,
        "q_peak_per_key": 1,  # a ends at 2 s as b starts: one at a time
        "q_peak_claims_per_window": 2,
    }


# -- I13 one job per tick ---------------------------------------------------------------


def tick_rows(name: str, seconds: list[int]) -> list[Row]:
    return [
        job(
            str(uuid.uuid4()),
            idempotency_key=f"periodic:{name}:{(T0 + timedelta(seconds=s)).isoformat().replace('+00:00', 'Z')}",
        )
        for s in seconds
    ]


def test_every_tick_once_passes_a_gap_or_a_double_is_caught() -> None:
    window = {"period_s": 1.0, "first": T0, "last": T0 + timedelta(seconds=9)}
    clean = schedule_ticks(tick_rows("every", list(range(10))), "every", **window)
    assert clean == {"I13_ticks_with_jobs_over_1": 0, "I13_ticks_missing": 0}
    gap = schedule_ticks(tick_rows("every", [0, 1, 2, 4, 5, 6, 7, 8, 9]), "every", **window)
    assert gap["I13_ticks_missing"] == 1
    double = schedule_ticks(tick_rows("every", [*range(10), 3]), "every", **window)
    assert double["I13_ticks_with_jobs_over_1"] == 1


def test_a_tick_inside_a_database_outage_may_be_missing() -> None:
    rows = tick_rows("every", [0, 1, 2, 9])
    outage = [(T0 + timedelta(seconds=2.5), T0 + timedelta(seconds=3))]
    excused = schedule_ticks(
        rows,
        "every",
        period_s=1.0,
        first=T0,
        last=T0 + timedelta(seconds=9),
        outages=outage,
        grace_s=6,
    )
    assert excused["I13_ticks_missing"] == 0


# -- I14 transactions rolled back -------------------------------------------------------


def test_a_rolled_back_job_that_exists_or_ran_is_caught() -> None:
    kept, gone = ids(2)
    rows = [job(kept)]
    ledger = run(kept, 1, 0, 1)
    assert rolled_back([gone], rows, executions(ledger, [])) == {
        "I14_rolled_back_exists": 0,
        "I14_rolled_back_ran": 0,
    }
    assert rolled_back([kept], rows, executions(ledger, []))["I14_rolled_back_exists"] == 1
    assert rolled_back([kept], [], executions(ledger, []))["I14_rolled_back_ran"] == 1


# -- I15 retention ----------------------------------------------------------------------


def test_deletion_of_an_unfinished_or_young_job_is_caught() -> None:
    a = ids(1)[0]
    ages = {"done": 5.0, "dlq": 20.0, "cancelled": 5.0}
    finished = T0 + timedelta(seconds=1)
    ok = job(a, finished_at=finished, deleted_at=finished + timedelta(seconds=5.2))
    assert retention([ok], ages) == {"I15_deleted_unfinished": 0, "I15_deleted_before_its_age": 0}
    young = {**ok, "deleted_at": finished + timedelta(seconds=4)}
    assert retention([young], ages)["I15_deleted_before_its_age"] == 1
    running = {**ok, "status": "processing", "finished_at": None}
    assert retention([running], ages)["I15_deleted_unfinished"] == 1
    dlq_young = {**ok, "status": "dlq"}  # 5.2 s old, dlq is kept 20 s
    assert retention([dlq_young], ages)["I15_deleted_before_its_age"] == 1


def test_every_acknowledged_job_is_accounted_for() -> None:
    a, b, c = ids(3)
    rows = [job(a), job(b, status="dlq", deleted_at=T0 + timedelta(seconds=30))]
    assert accounted([a, b], rows) == {"I2_acked_missing": 0, "I2_acked_unfinished": 0}
    assert accounted([a, b, c], rows)["I2_acked_missing"] == 1
    assert accounted([a], [job(a, status="pending")])["I2_acked_unfinished"] == 1


# -- I16 cancel -------------------------------------------------------------------------


def test_a_cancelled_job_claimed_again_or_ending_otherwise_is_caught() -> None:
    a = ids(1)[0]
    at = T0 + timedelta(seconds=1.5)
    ledger = run(a, 1, 0, 2)  # the run in flight when the cancel came
    ack = [{"job_id": a, "at": at}]
    clean = cancels(ack, [job(a, status="cancelled")], executions(ledger, []))
    assert clean == {
        "I16_cancelled_then_other_outcome": 0,
        "I16_claimed_after_cancel": 0,
        "I16_outcome_after_cancel": 0,
    }
    assert (
        cancels(ack, [job(a, status="done")], executions(ledger, []))[
            "I16_cancelled_then_other_outcome"
        ]
        == 0
    )  # it finished first
    assert (
        cancels(ack, [job(a, status="dlq")], executions(ledger, []))[
            "I16_cancelled_then_other_outcome"
        ]
        == 1
    )
    again = ledger + run(a, 2, 3, 4)
    assert (
        cancels(ack, [job(a, status="cancelled")], executions(again, []))[
            "I16_claimed_after_cancel"
        ]
        == 1
    )


def test_a_running_cancel_is_judged_from_the_claim_its_answer_showed() -> None:
    """A cancel that waited on the lock of a claim committing before it is dated before
    that claim (cancel_requested_at 0.9 s, claim 1.0 s): that claim is the one running,
    not a claim after the cancel; one after it is."""
    a = ids(1)[0]
    claimed = T0 + timedelta(seconds=1)
    ledger = run(a, 1, 1, 2, claimed_at=claimed)
    ack = [{"job_id": a, "at": T0 + timedelta(seconds=0.9), "claimed_at": claimed}]
    rows = [job(a, status="cancelled")]
    assert cancels(ack, rows, executions(ledger, []))["I16_claimed_after_cancel"] == 0
    again = ledger + run(a, 2, 3, 4)
    assert cancels(ack, rows, executions(again, []))["I16_claimed_after_cancel"] == 1


def test_an_outcome_recorded_after_a_cancel_took_effect_is_caught() -> None:
    a, b = ids(2)
    ack = [{"job_id": a, "at": T0, "claimed_at": T0}]
    rows = [job(a, status="done"), job(b)]
    late = {"job_id": a, "old_status": "cancelled", "new_status": "done", "changed_at": T0}
    assert cancels(ack, rows, [], [])["I16_outcome_after_cancel"] == 0
    assert cancels(ack, rows, [], [late])["I16_outcome_after_cancel"] == 1
    other = {**late, "job_id": b}  # not a cancelled job: I6's, over the whole table
    assert cancels(ack, rows, [], [other])["I16_outcome_after_cancel"] == 0
    assert finished_unchanged([]) == {"I6_finished_job_changed": 0}
    assert finished_unchanged([late, other]) == {"I6_finished_job_changed": 2}


def test_a_killed_job_whose_cancel_was_requested_ends_cancelled_not_unrecovered() -> None:
    """Soak seed 21: a running job with a cancel request, its worker killed: the lease
    expired and the job ended cancelled, never claimed again. That is the cancel's
    outcome (README), not an orphan the fleet failed to recover (I7)."""
    a = ids(1)[0]
    start = run(a, 1, 0, 1)[0]  # the start only: the process died in it
    kill = {"kind": "kill", "pid": 1, "mono": int(0.5 * SECOND), "db_now": T0}
    requested = job(a, status="cancelled", cancel_requested_at=T0.isoformat())
    report = check([requested], [start], [], [kill])
    assert report.counts["I7_unrecovered"] == 0
    assert report.figures["I7_cancelled_instead"] == 1
    lost = job(a, status="cancelled", cancel_requested_at=None)  # no request: an orphan
    assert check([lost], [start], [], [kill]).counts["I7_unrecovered"] == 1


def test_an_orphan_claimed_again_by_its_own_process_once_it_resumed_is_recovered() -> None:
    """Soak seed 21: a worker paused past its lease; the job expired, was due again
    after its backoff, and the same process, resumed, claimed it anew (another token)
    before any other did. Recovered, not an orphan (I7)."""
    a = ids(1)[0]
    first = run(a, 1, 0, 6.8, token="t1")  # paused at 0.5 s for 6 s: it ends late
    again = run(a, 1, 8.4, 9, token="t2", claimed_at=T0 + timedelta(seconds=8.4))
    stop = {"kind": "stop", "pid": 1, "mono": int(0.5 * SECOND), "db_now": T0, "overlap_ok": True}
    report = check([job(a)], first + again, [], [stop])
    assert report.counts["I7_unrecovered"] == 0
    assert check([job(a)], first, [], [stop]).counts["I7_unrecovered"] == 1


# -- I18 snoozes ------------------------------------------------------------------------


def snoozer(job_id: str, **fields: Any) -> Row:
    """A done job of type snooze (1 s), snoozed once, last claimed at 1.5 s."""
    defaults = {
        "type": "snooze",
        "payload": {"snooze": 1.0},
        "snoozes": 1,
        "run_at": T0 + timedelta(seconds=1.2),
        "started_at": T0 + timedelta(seconds=1.5),
    }
    return job(job_id, **{**defaults, **fields})


def test_a_snoozer_snoozed_once_and_run_after_its_delay_passes() -> None:
    a = ids(1)[0]
    ledger = run(a, 1, 0, 0.1, failed=True) + run(a, 2, 1.5, 1.6)
    assert snoozes([snoozer(a)], executions(ledger, []), []) == {
        "I18_snoozer_not_done": 0,
        "I18_never_snoozed": 0,
        "I18_snoozed_twice": 0,
        "I18_ran_while_snoozed": 0,
    }


def test_a_snoozer_not_done_or_snoozed_other_than_once_is_caught() -> None:
    a = ids(1)[0]
    runs = executions(run(a, 1, 0, 0.1, failed=True) + run(a, 2, 1.5, 1.6), [])
    assert snoozes([snoozer(a, status="dlq")], runs, [])["I18_snoozer_not_done"] == 1
    assert snoozes([snoozer(a, snoozes=0)], runs, [])["I18_never_snoozed"] == 1
    assert snoozes([snoozer(a, snoozes=2)], runs, [])["I18_snoozed_twice"] == 1
    early_row = snoozer(a, started_at=T0 + timedelta(seconds=1.1))  # before its run_at
    assert snoozes([early_row], runs, [])["I18_ran_while_snoozed"] == 1


def test_a_claim_inside_the_snooze_is_caught_unless_a_fault_came_between() -> None:
    a = ids(1)[0]
    ledger = run(a, 1, 0, 0.1, failed=True) + run(a, 2, 0.5, 0.6)  # 0.5 s into 1 s
    row = snoozer(a, started_at=T0 + timedelta(seconds=1.3))
    assert snoozes([row], executions(ledger, []), [])["I18_ran_while_snoozed"] == 1
    # pid 1 killed between its snoozing start and the claim: the snooze may never have
    # been recorded (the I5 rule), so the early claim is no evidence
    kill = {"kind": "kill", "pid": 1, "mono": int(0.05 * SECOND)}
    excused = snoozes([row], executions(ledger, [kill]), [kill])
    assert excused["I18_ran_while_snoozed"] == 0


# -- I17 results and waiters --------------------------------------------------------------


def test_a_result_of_a_fenced_or_earlier_attempt_is_caught() -> None:
    a = ids(1)[0]
    first, last = "t-first", "t-last"
    claimed_first = T0
    claimed_last = T0 + timedelta(seconds=5)
    ledger = run(a, 1, 0, 6, token=first, claimed_at=claimed_first) + run(
        a, 2, 5, 6, token=last, claimed_at=claimed_last
    )
    runs = executions(ledger, [])
    row = job(a, started_at=claimed_last)
    good = {**row, "result": {"token": last, "claimed_at": claimed_last.isoformat()}}
    assert results([good], runs) == {
        "I17_result_of_no_completed_run": 0,
        "I17_result_not_of_last_claim": 0,
    }
    fenced = {**row, "result": {"token": first, "claimed_at": claimed_first.isoformat()}}
    assert results([fenced], runs)["I17_result_not_of_last_claim"] == 1
    invented = {**row, "result": {"token": "nobody", "claimed_at": claimed_last.isoformat()}}
    assert results([invented], runs)["I17_result_of_no_completed_run"] == 1


def test_a_waiter_told_done_sees_what_the_store_keeps() -> None:
    a = ids(1)[0]
    rows = [job(a, result={"token": "t"})]
    assert waiters([{"job_id": a, "status": "done", "result": {"token": "t"}}], rows) == {
        "I17_waiter_saw_other_outcome": 0
    }
    wrong = [{"job_id": a, "status": "done", "result": {"token": "u"}}]
    assert waiters(wrong, rows)["I17_waiter_saw_other_outcome"] == 1


# -- I9 with deletions (checker.py) --------------------------------------------------------


def test_a_key_reused_after_its_job_was_deleted_is_not_a_duplicate() -> None:
    jobs, ledger, responses = history(4, 2, seed=21)
    clean = check(jobs, ledger, responses, [])
    assert clean.counts["I9_keys_with_rows_over_1"] == 0
    reused = copy.deepcopy(jobs)
    reused[0]["deleted_at"] = T0 + timedelta(seconds=1)
    reused[1]["idempotency_key"] = reused[0]["idempotency_key"]
    reused[1]["created_at"] = T0 + timedelta(seconds=2)
    assert check(reused, ledger, responses, []).counts["I9_keys_with_rows_over_1"] == 0
    live_twice = copy.deepcopy(reused)
    live_twice[0]["deleted_at"] = None
    assert check(live_twice, ledger, responses, []).counts["I9_keys_with_rows_over_1"] == 1
    deleted_late = copy.deepcopy(reused)
    deleted_late[0]["deleted_at"] = T0 + timedelta(seconds=3)  # after the second was made
    assert check(deleted_late, ledger, responses, []).counts["I9_keys_with_rows_over_1"] == 1

"""R4 (SIGTERM: graceful shutdown), R9 (poison jobs), R16 (order), R15 (claim race)."""

from __future__ import annotations

import itertools
import random
import re
import signal
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from tests.faults.checker import Options
from tests.faults.lab import Lab, RowResult, counts, kill, wait_for
from tests.faults.rows.common import enqueue, scaled, status_counts, timed, wait_drained
from vesper.domain.submission import JobRequest


def _fleet_pids(lab: Lab, database: str) -> set[int]:
    return {
        p
        for (p,) in lab.need_cluster().execute("SELECT pid FROM vesper_workers", database=database)
    }


def _starts(lab: Lab, pid: int | None = None) -> list[dict[str, Any]]:
    return [e for e in lab.ledger() if e["event"] == "start" and (pid is None or e["pid"] == pid)]


@timed
def r4(lab: Lab, *, variant: str = "A") -> RowResult:  # noqa: PLR0915
    """SIGTERM with running jobs: A finish in grace; B released at grace and re-claimed
    at once by another worker; C a second SIGTERM exits at once."""
    result = RowResult(f"R4-{variant}")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    queued = scaled(lab, 20, 100)
    running_sleep = {"A": 3.0, "B": 10.0, "C": 10.0}[variant]
    grace = {"A": "10s", "B": "1s", "C": "10s"}[variant]
    enqueue(
        app,
        [JobRequest(type="record", priority=9, payload={"sleep": running_sleep}) for _ in range(4)],
    )
    if variant == "A":
        enqueue(app, [JobRequest(type="record", payload={"sleep": 0.1}) for _ in range(queued)])
    env = lab.env(cluster.env(database), WORKERS="4", VESPER_SHUTDOWN_GRACE=grace)
    worker = lab.worker(env)
    if not wait_for(lambda: len(_starts(lab, worker.pid)) >= 4, timeout=60, interval=0.05):
        result.failures.append("the worker never ran 4 jobs")
        return result
    other = lab.worker(env) if variant in ("B", "C") else None
    if other is not None and not wait_for(lambda: len(_fleet_pids(lab, database)) == 2, timeout=30):
        result.failures.append("the second worker did not register")
        return result
    t0 = lab.db_now(database)
    t0_mono = time.monotonic()
    kill(worker, signal.SIGTERM)
    lab.fault("term", worker.pid, database=database)
    if variant == "C":
        time.sleep(0.5)
        kill(worker, signal.SIGTERM)
    try:
        code = worker.wait(timeout=30)
    except Exception:
        result.failures.append("the worker did not exit within 30 s")
        return result
    exited = time.monotonic() - t0_mono
    exit_db = lab.db_now(database)
    result.figures.update(exit_code=code, exit_s=exited)
    rows = lab.dump_pg(database)
    by_status = counts(rows)
    if variant == "A":
        result.expect(code == 0, f"exit code {code}")
        result.expect(exited <= 3 + 2, f"exited after {exited:.1f}s > 5s")
        late = [
            r for r in rows if r["started_at"] and r["started_at"] > t0 + timedelta(seconds=0.5)
        ]
        result.expect(not late, f"{len(late)} claims after SIGTERM")
        result.expect(by_status.get("done", 0) == 4, f"statuses {by_status}")
        pending = [r for r in rows if r["status"] == "pending"]
        result.expect(
            len(pending) == queued
            and all(r["retries"] == 0 and r["attempts"] == 0 for r in pending),
            f"queued jobs: {by_status}",
        )
        left = wait_for(
            lambda: worker.pid not in _fleet_pids(lab, database), timeout=1.0, interval=0.05
        )
        result.expect(left is not None, "still in /workers 1 s after exit")
    elif variant == "B":
        result.expect(code == 0, f"exit code {code}")
        result.expect(exited <= 1 + 2, f"exited after {exited:.1f}s (grace 1s)")
        assert other is not None
        taken = wait_for(
            lambda: len(_starts(lab, other.pid)) >= 4, timeout=0.3 + 1 + 2, interval=0.05
        )
        result.expect(
            taken is not None, "released jobs not re-claimed within poll + 1 s (+2 s slack)"
        )
        reclaims = list(_starts(lab, other.pid))
        if reclaims:
            first = min(e["claimed_at"] for e in reclaims)
            result.figures["reclaim_after_exit_s"] = (_parse(first) - exit_db).total_seconds()
        rows = lab.dump_pg(database)
        stuck = [
            r
            for r in rows
            if r["status"] == "processing" and r["worker_id"] and str(worker.pid) in r["worker_id"]
        ]
        result.expect(not stuck, f"{len(stuck)} jobs left processing by the stopped worker")
    else:
        result.expect(exited <= 0.5 + 1.0, f"second SIGTERM: exited after {exited:.1f}s")

        def none_stuck() -> bool:
            rows = lab.dump_pg(database)
            return not any(
                r["status"] == "processing"
                and r["worker_id"]
                and f"-{worker.pid}-" in r["worker_id"]
                for r in rows
            )

        cleared = wait_for(none_stuck, timeout=4.0 + 1.0 + 1.0, interval=0.1)
        result.expect(
            cleared is not None, "jobs of the killed worker still processing after lease + 1 s"
        )
    return result


def _parse(text_: str) -> Any:
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(text_)


@timed
def r9(lab: Lab) -> RowResult:
    """Poison jobs: 4 starts then dlq (retries 3); non-retryable: 1 start then dlq; the
    retry endpoint moves a dlq job back once, a second retry is 409."""
    result = RowResult("R9")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    poison, normal, nonretry = scaled(lab, (20, 60, 5), (100, 900, 20))
    enqueue(app, [JobRequest(type="fail", max_retries=3) for _ in range(poison)])
    enqueue(app, [JobRequest(type="nonretry", max_retries=3) for _ in range(nonretry)])
    # Retries are FIFO too: a retry's run_at is its failure + backoff, behind every job
    # due earlier at its priority. The normal jobs are no-ops at full scale (as the row
    # has it), so the backlog ahead of a retry drains within the bound's slack; with
    # 900 jobs of 50 ms on 12 slots a retry waits ~3.75 s behind them, by design.
    normal_sleep = scaled(lab, 0.05, 0.0)
    enqueue(
        app, [JobRequest(type="record", payload={"sleep": normal_sleep}) for _ in range(normal)]
    )
    total = poison + normal + nonretry
    env = lab.env(cluster.env(database), WORKERS="4")
    procs = [lab.worker(env) for _ in range(3)]
    wait_drained(lab, result, database, total, timeout=scaled(lab, 60, 300))
    time.sleep(0.5)  # a start after dlq would show now
    for proc in procs:
        kill(proc, signal.SIGTERM)
    for proc in procs:
        proc.wait(30)
    rows = lab.dump_pg(database)
    starts = Counter(e["job_id"] for e in _starts(lab))
    report = lab.check(rows)
    result.expect_clean(report)
    fails = [r for r in rows if r["type"] == "fail"]
    result.expect(
        all(r["status"] == "dlq" and r["retries"] == 3 for r in fails),
        "poison not dlq with retries 3",
    )
    result.expect(
        all(starts[r["job_id"]] == 4 for r in fails),
        f"poison starts {Counter(starts[r['job_id']] for r in fails)}",
    )
    result.expect(
        all(
            r["error"].startswith("RuntimeError: always fails (attempt 4)")
            and len(r["error"]) <= 4096
            for r in fails
        ),
        "poison error is not the last message",
    )
    nonretryable = [r for r in rows if r["type"] == "nonretry"]
    result.expect(
        all(r["status"] == "dlq" and starts[r["job_id"]] == 1 for r in nonretryable),
        "non-retryable jobs not dlq after 1 start",
    )
    result.expect(
        all(r["status"] == "done" for r in rows if r["type"] == "record"),
        "normal jobs not all done",
    )
    # backoff gaps: claim k+1 - claim k <= min(cap, base * 2**k) + poll + 0.5 s (+1 s on 2 busy cores)
    # split into the schedule (run_at of attempt k+1 after claim k: the backoff) and the
    # queueing (claim k+1 after its run_at: poll, and slots busy with earlier-due jobs)
    worst = schedule = lag = 0.0
    for job in fails:
        attempts = sorted(
            (_parse(e["claimed_at"]), _parse(e["run_at"]))
            for e in _starts(lab)
            if e["job_id"] == job["job_id"]
        )
        for k, ((a, _), (b, due)) in enumerate(itertools.pairwise(attempts)):
            backoff = min(2.0, 0.2 * 2**k)
            worst = max(worst, (b - a).total_seconds() - (backoff + 0.3 + 0.5))
            schedule = max(schedule, (due - a).total_seconds() - backoff)
            lag = max(lag, (b - due).total_seconds())
    result.figures.update(
        worst_backoff_excess_s=worst, schedule_excess_s=schedule, max_claim_lag_s=lag
    )
    result.expect(worst <= 1.0, f"a retry came {worst:.2f}s later than its backoff allows")
    # the retry endpoint, through a real API process
    api = lab.service(lab.env(cluster.env(database)), ("api",))
    target = fails[0]["job_id"]
    first = api.post(f"/jobs/{target}/retry")
    second = api.post(f"/jobs/{target}/retry")
    result.figures.update(retry_status=first.status_code, second_retry_status=second.status_code)
    result.expect(
        first.status_code == 200 and first.json()["status"] == "pending",
        f"retry: {first.status_code}",
    )
    result.expect(second.status_code == 409, f"second retry: {second.status_code}")
    result.figures.update(poison=poison, normal=normal, nonretryable=nonretry)
    return result


@timed
def r9_p2(lab: Lab) -> RowResult:
    """Jobs that kill their own worker reach dlq through lease-expiry counting: exactly
    max_retries + 1 claims, no infinite loop; a supervisor restarts dead workers."""
    result = RowResult("R9-P2")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    n = scaled(lab, 3, 20)
    enqueue(app, [JobRequest(type="selfkill", max_retries=3) for _ in range(n)])
    env = lab.env(cluster.env(database), WORKERS="1")
    procs = [lab.worker(env) for _ in range(3)]
    restarts = 0
    deadline = time.monotonic() + scaled(lab, 90, 600)
    while time.monotonic() < deadline:
        if status_counts(lab, database).get("dlq", 0) >= n:
            break
        for i, proc in enumerate(procs):
            if proc.popen.poll() is not None and restarts < 10 * n:
                procs[i] = lab.worker(env)
                restarts += 1
        time.sleep(0.2)
    rows = lab.dump_pg(database)
    starts = Counter(e["job_id"] for e in _starts(lab))
    result.figures.update(jobs=n, restarts=restarts, starts=sum(starts.values()))
    result.expect(all(r["status"] == "dlq" for r in rows), f"statuses {counts(rows)}")
    result.expect(
        all(r["attempts"] == 4 for r in rows), f"attempts {[r['attempts'] for r in rows]}"
    )
    result.expect(
        all(starts[r["job_id"]] == 4 for r in rows), f"starts {[starts[r['job_id']] for r in rows]}"
    )
    time.sleep(1.0)  # nothing may start after dlq
    result.expect(
        sum(Counter(e["job_id"] for e in _starts(lab)).values()) == 4 * n, "a start after dlq"
    )
    return result


@timed
def r16(lab: Lab) -> RowResult:
    """One claimer with one slot starts jobs in (priority desc, run_at asc, created) order."""
    result = RowResult("R16")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    per = scaled(lab, 10, 100)
    now = lab.db_now(database)
    rng = random.Random(16)
    requests = [
        JobRequest(
            type="record", priority=p, run_at=now - timedelta(seconds=1000 - i * 3 - rng.random())
        )
        for p in range(11)
        for i in range(per)
    ]
    rng.shuffle(requests)
    enqueue(app, requests)
    total = len(requests)
    worker = lab.worker(lab.env(cluster.env(database), WORKERS="1"))
    wait_drained(lab, result, database, total, timeout=scaled(lab, 60, 300))
    report = lab.check(lab.dump_pg(database), Options(order_pid=worker.pid))
    result.expect_clean(report)
    result.figures.update(jobs=total, out_of_order=report.counts.get("I10_out_of_order"))
    return result


@timed
def r15(lab: Lab) -> RowResult:
    """Claim race: 4 x 8 claimers on 2 cores, no duplicates, no deadlock; the claim uses
    the partial claim index (no Seq Scan on jobs)."""
    result = RowResult("R15")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    total = scaled(lab, 3000, 20000)
    enqueue(app, [JobRequest(type="record", priority=i % 11) for i in range(total)])
    cluster.execute("ANALYZE vesper_jobs", database=database)
    plan = _claim_plan(lab, database)
    result.figures["plan"] = " | ".join(line.strip() for line in plan.splitlines()[:4])
    result.expect("vesper_jobs_claim_idx" in plan, "the claim does not use vesper_jobs_claim_idx")
    result.expect(
        not re.search(r"Seq Scan on vesper_jobs", plan),
        "the claim plan has a Seq Scan on vesper_jobs",
    )
    log_before = len(cluster.log_text())
    procs, slots = scaled(lab, (4, 8), (6, 8))
    env = lab.env(cluster.env(database), WORKERS=str(slots))
    for _ in range(procs):
        lab.worker(env)
    wait_drained(lab, result, database, total, timeout=scaled(lab, 120, 900))
    report = lab.check(
        lab.dump_pg(database), Options(pg_log=cluster.log_text()[log_before:].splitlines())
    )
    result.expect_clean(report)
    pg_log = cluster.log_text()[log_before:]
    result.expect("could not serialize" not in pg_log, "serialization failures in the PG log")
    result.figures.update(jobs=total, claimers=procs * slots)
    return result


def _claim_plan(lab: Lab, database: str) -> str:
    from vesper.adapters.sql.engines import open_engine, sql_url  # noqa: PLC0415
    from vesper.adapters.sql.postgres import CLAIM  # noqa: PLC0415

    engine = open_engine(sql_url(lab.need_cluster().url(database)))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("EXPLAIN " + CLAIM.text),
                {
                    "now": None,
                    "limit": 8,
                    "worker_id": "explain",
                    "token": "00000000-0000-0000-0000-000000000000",
                    "lease": timedelta(seconds=30),
                },
            )
            return "\n".join(r[0] for r in rows)
    finally:
        engine.dispose()

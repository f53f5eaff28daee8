"""R8: clock skew between workers (libfaketime), PostgreSQL's clock being the only one
that counts for leases and run_at."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.faults.lab import Lab, RowResult
from tests.faults.rows.common import enqueue, scaled, timed, wait_drained
from vesper.domain.submission import JobRequest

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is off by `offset` seconds ("+300");
    monotonic time stays real, so asyncio timers behave."""
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1"}


@timed
def r8(lab: Lab) -> RowResult:
    """Worker A at +300 s, worker B at -300 s: no overlap, no re-claim, delayed jobs not
    started before their run_at, retries follow the database's clock."""
    result = RowResult("R8")
    if not FAKETIME_LIB.exists():
        result.failures.append(f"libfaketime is missing ({FAKETIME_LIB}); apt-get install faketime")
        return result
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    jobs, delayed, flaky = scaled(lab, (100, 10, 10), (500, 50, 50))
    enqueue(
        app,
        [JobRequest(type="record", payload={"sleep": 0.2, "sleep_max": 0.5}) for _ in range(jobs)],
    )
    from datetime import timedelta  # noqa: PLC0415

    enqueue(
        app,
        [
            JobRequest(type="record", delay=timedelta(seconds=scaled(lab, 5, 20)))
            for _ in range(delayed)
        ],
    )
    enqueue(app, [JobRequest(type="flaky", payload={"fail_times": 2}) for _ in range(flaky)])
    total = jobs + delayed + flaky
    env = lab.env(cluster.env(database), WORKERS="4")
    lab.worker(env, extra_env=skewed("+300"))
    lab.worker(env, extra_env=skewed("-300"))
    wait_drained(lab, result, database, total, timeout=scaled(lab, 60, 300))
    rows = lab.dump_pg(database)
    report = lab.check(rows)
    result.expect_clean(report)
    late = [r for r in rows if r["started_at"] is not None and r["started_at"] < r["run_at"]]
    result.expect(not late, f"{len(late)} jobs started before their run_at")
    starts = Counter(e["job_id"] for e in lab.ledger() if e["event"] == "start")
    flaky_rows = [r for r in rows if r["type"] == "flaky"]
    result.expect(
        all(starts[r["job_id"]] == 3 and r["status"] == "done" for r in flaky_rows), "flaky jobs"
    )
    result.expect(
        all(r["retries"] == 0 for r in rows if r["type"] == "record"), "a record job was re-claimed"
    )
    pids = {e["pid"] for e in lab.ledger()}
    result.expect(len(pids) == 2, "both skewed workers took jobs")
    result.figures.update(jobs=total, workers_with_jobs=len(pids))
    return result

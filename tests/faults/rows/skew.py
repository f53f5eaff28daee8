"""R8: clock skew between workers (libfaketime), PostgreSQL's clock being the only one
that counts for leases and run_at."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.faults.lab import Lab, RowResult
from tests.faults.rows.common import enqueue, scaled, timed, wait_drained
from vesper.domain.submission import JobRequest

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose wall clock is off by `offset` seconds ("+300");
    monotonic time stays real, so asyncio timers behave."""
    return {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": offset, "DONT_FAKE_MONOTONIC": "1"}


DELAYED = 7  # the priority that marks R8's delayed jobs


@timed
def r8(lab: Lab, *, variant: str = "workers") -> RowResult:
    """(a) "workers": worker A at +300 s, worker B at -300 s. (b) "postmaster": the
    database server at +120 s, every client at real time. Either way: no overlap, no
    re-claim, delayed jobs neither started before their run_at nor before their delay
    has passed, retries follow the database's clock."""
    if variant not in ("workers", "postmaster"):
        raise ValueError(f"unknown R8 variant {variant!r}")
    result = RowResult("R8" if variant == "workers" else "R8-postmaster")
    if not FAKETIME_LIB.exists():
        result.failures.append(f"libfaketime is missing ({FAKETIME_LIB}); apt-get install faketime")
        return result
    cluster = lab.need_cluster()
    if variant == "workers":
        _r8(lab, result, skews=("+300", "-300"))
        return result
    cluster.extra_env = skewed("+120")
    try:
        cluster.restart()
        ahead = (lab.db_now("postgres") - datetime.now(UTC)).total_seconds()
        result.figures["db_ahead_s"] = ahead
        result.expect(110 < ahead < 130, f"the server's clock is {ahead:.0f}s ahead, not ~120s")
        _r8(lab, result, skews=(None, None))
    finally:
        cluster.extra_env = {}
        cluster.restart()
    return result


def _r8(lab: Lab, result: RowResult, *, skews: tuple[str | None, str | None]) -> None:
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    jobs, delayed, flaky = scaled(lab, (100, 10, 10), (500, 50, 50))
    enqueue(
        app,
        [JobRequest(type="record", payload={"sleep": 0.2, "sleep_max": 0.5}) for _ in range(jobs)],
    )
    delay = timedelta(seconds=scaled(lab, 5, 20))
    enqueued = time.monotonic_ns()
    enqueue(
        app,
        [JobRequest(type="record", priority=DELAYED, delay=delay) for _ in range(delayed)],
    )
    enqueue(app, [JobRequest(type="flaky", payload={"fail_times": 2}) for _ in range(flaky)])
    total = jobs + delayed + flaky
    env = lab.env(cluster.env(database), WORKERS="4")
    for offset in skews:
        lab.worker(env, extra_env=skewed(offset) if offset else {})
    wait_drained(lab, result, database, total, timeout=scaled(lab, 60, 300))
    rows = lab.dump_pg(database)
    report = lab.check(rows)
    result.expect_clean(report)
    late = [r for r in rows if r["started_at"] is not None and r["started_at"] < r["run_at"]]
    result.expect(not late, f"{len(late)} jobs started before their run_at")
    # a delay counts real time, whichever clock is off: a run_at taken from a client's
    # clock would start them early when the server's clock is ahead
    delayed_ids = {r["job_id"] for r in rows if r["priority"] == DELAYED}
    early = [
        e
        for e in lab.ledger()
        if e["event"] == "start"
        and e["job_id"] in delayed_ids
        and e["mono"] - enqueued < (delay.total_seconds() - 0.05) * 1e9
    ]
    result.expect(not early, f"{len(early)} delayed jobs started before their delay passed")
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

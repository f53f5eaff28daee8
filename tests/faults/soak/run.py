"""One soak run: the fleet on a scratch database of a disposable cluster, the workload
pieces, the nemesis on its seeded schedule; then a drain and every checker.

How the soak learns of deletions: before any process starts, a trigger on vesper_jobs
copies each deleted row (the whole row, as JSON) with the database time of its
deletion into `soak_deleted`, in the deleting transaction itself. A row is in that log
iff its deletion committed, so retention (I15) and accounting (I2) see every prune,
however short the retention and whatever process pruned.

A third trigger logs every update that changes a done or cancelled row (its status,
result or finished_at) into `soak_changed`: nothing in the soak retries such a job, so
any entry is an outcome recorded after the job had ended (I6, I16).

Two times per deletion, two per keyed row. `deleted_at` and `created_at` are their
statements' start (`statement_timestamp()`): retention's age is counted from the first.
They cannot order a key's rows: an INSERT that began first may wait on a lock while a
later DELETE frees its key, then insert with the earlier time (soak seed 21: 11 keys).
So AFTER ROW triggers also log `clock_timestamp()` when the row itself was deleted
(`row_deleted_at`, before that commit) and inserted (`row_inserted_at`, after any wait
for it): a key's next row is inserted strictly after its last one was deleted.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.faults import invariants
from tests.faults.checker import ORPHANING, Execution, Options, check, executions
from tests.faults.lab import Lab, RowResult
from tests.faults.soak.fleet import Fleet
from tests.faults.soak.nemesis import Nemesis
from tests.faults.soak.pieces import Context, Evidence, Piece, pieces, start_all
from tests.faults.soak.schedule import plan

RETAIN = {"done": 5.0, "cancelled": 5.0, "dlq": 15.0}  # seconds: retention at seconds
DRAIN_S = 240.0
TRIGGER = """
CREATE TABLE soak_deleted (
    row jsonb NOT NULL, deleted_at timestamptz NOT NULL, row_deleted_at timestamptz NOT NULL
);
CREATE FUNCTION soak_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_deleted VALUES (to_jsonb(OLD), statement_timestamp(), clock_timestamp());
    RETURN OLD;
END $$;
CREATE TRIGGER soak_log_delete AFTER DELETE ON vesper_jobs
    FOR EACH ROW EXECUTE FUNCTION soak_log_delete();
CREATE TABLE soak_inserted (id uuid PRIMARY KEY, row_inserted_at timestamptz NOT NULL);
CREATE FUNCTION soak_log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_inserted VALUES (NEW.id, clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER soak_log_insert AFTER INSERT ON vesper_jobs
    FOR EACH ROW WHEN (NEW.idempotency_key IS NOT NULL) EXECUTE FUNCTION soak_log_insert();
CREATE TABLE soak_changed (
    id uuid NOT NULL, old_status text NOT NULL, new_status text NOT NULL,
    changed_at timestamptz NOT NULL
);
CREATE FUNCTION soak_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO soak_changed VALUES (NEW.id, OLD.status, NEW.status, clock_timestamp());
    RETURN NEW;
END $$;
-- result is json (no equality operator): compared as text
CREATE TRIGGER soak_log_change AFTER UPDATE ON vesper_jobs FOR EACH ROW
    WHEN (OLD.status IN ('done', 'cancelled') AND (
        NEW.status IS DISTINCT FROM OLD.status
        OR NEW.finished_at IS DISTINCT FROM OLD.finished_at
        OR NEW.result::text IS DISTINCT FROM OLD.result::text))
    EXECUTE FUNCTION soak_log_change();
"""
TIMES = ("run_at", "created_at", "updated_at", "started_at", "finished_at")


def soak(lab: Lab, *, minutes: float, seed: int, say: Callable[[str], None] = print) -> RowResult:
    result = RowResult("soak")
    started = time.monotonic()
    schedule = plan(seed, minutes)
    say(f"soak: seed={seed} minutes={minutes:g} faults planned={len(schedule)}")
    for planned in schedule:
        say(f"  plan {planned.line()}")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    cluster.execute(TRIGGER, database=database)
    env = lab.env(
        cluster.env(database),
        WORKERS="4",
        VESPER_RETAIN_DONE=f"{RETAIN['done']:g}s",
        VESPER_RETAIN_CANCELLED=f"{RETAIN['cancelled']:g}s",
        VESPER_RETAIN_DLQ=f"{RETAIN['dlq']:g}s",
        VESPER_PRUNE_INTERVAL="1s",
    )
    fleet = Fleet(lab, env, lab.proxy())
    fleet.start()
    chosen = [p for p in pieces() if p.available()]
    left_out = [p.name for p in pieces() if not p.available()]
    say(f"soak: pieces {', '.join(p.name for p in chosen)}; not on this branch: {left_out}")
    stop = threading.Event()
    origin = time.monotonic()
    evidence = Evidence(lab.responses)
    ctx = Context(
        urls=fleet.urls,
        app=lab.pg_app(database),
        conninfo=cluster.conninfo(database),
        evidence=evidence,
        seed=seed,
        stop=stop,
        deadline=origin + minutes * 60 + 120,
        faults=lab.faults,
    )
    threads = start_all(chosen, ctx)
    nemesis = Nemesis(lab, fleet, database, schedule).start(origin)
    activity: list[dict[str, Any]] = []
    sampler = threading.Thread(
        target=_sample, args=(lab, database, nemesis, activity, stop), daemon=True
    )
    sampler.start()
    try:
        stop.wait(max(0.0, origin + minutes * 60 - time.monotonic()))
    finally:
        stop.set()
        nemesis.stop()
        nemesis.settle()
        for thread in [*threads, sampler]:
            thread.join(timeout=120)
    workload_s = time.monotonic() - origin
    for piece in chosen:
        piece.finish(ctx)
    drain_s = _drain(lab, database, result)
    rows = table_rows(cluster.conninfo(database))
    evidence.changes.extend(table_changes(cluster.conninfo(database)))
    _keep(lab.root, rows, lab.faults)
    fleet.terminate()
    ledger = lab.ledger()
    runs = executions(ledger, lab.faults)
    checked, acked = _judge(lab, result, rows, ledger, runs, ctx, chosen, fleet, activity)
    failed_faults = [d for d in nemesis.done if d["error"]]
    result.expect(not failed_faults, f"faults that failed to run: {failed_faults[:3]}")
    statuses = Counter(row["status"] for row in rows)
    result.figures.update(
        seed=seed,
        minutes=minutes,
        faults=len(nemesis.done),
        jobs=len(rows),
        deleted=sum(1 for row in rows if row.get("deleted_at") is not None),
        acked=len(set(acked)),
        rolled_back=len(evidence.rolled_back),
        cancels=len(evidence.cancel_acks),
        running_cancels=len(evidence.running_cancels),
        waiter_answers=len(evidence.answers),
        runs=len(runs),
        **{f"status_{k}": v for k, v in sorted(statuses.items())},
        workload_s=round(workload_s, 1),
        drain_s=round(drain_s, 1),
        activity_samples=len(activity),
        **evidence.figures,
    )
    result.figures["checked"] = checked
    result.figures["per_fault"] = per_fault(lab.faults, runs)
    result.seconds = time.monotonic() - started
    return result


def _keep(root: Path, rows: list[dict[str, Any]], faults: list[dict[str, Any]]) -> None:
    """Every row, live and deleted, and every fault as the checkers see them, one JSON
    a line beside the logs and the ledger: a failure's post-mortem needs them all."""
    for name, items in (("jobs.jsonl", rows), ("faults.jsonl", faults)):
        with (root / name).open("w") as out:
            out.writelines(json.dumps(item, default=str) + "\n" for item in items)


def _judge(
    lab: Lab,
    result: RowResult,
    rows: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    runs: list[Execution],
    ctx: Context,
    chosen: list[Piece],
    fleet: Fleet,
    activity: list[dict[str, Any]],
) -> tuple[dict[str, int], list[str]]:
    """Every checker over the evidence: I1-I11 (checker.py), then accounting, retention,
    results and each piece's own invariants; violations go to `result`."""
    evidence = ctx.evidence
    report = check(
        rows,
        ledger,
        lab.responses,
        lab.faults,
        Options(
            require_terminal=True,
            lease_lost=lab.lease_lost(fleet.every_process),
            activity=activity,
            pg_log=lab.need_cluster().log_text().splitlines(),
        ),
    )
    result.expect_clean(report)
    acked = [r["job_id"] for r in lab.responses if r.get("job_id") and 200 <= r["status"] < 300]
    acked += evidence.acked
    counts: dict[str, int] = {}
    counts |= invariants.accounted(acked, rows)
    counts |= invariants.retention(rows, RETAIN)
    counts |= invariants.results(rows, runs)
    counts |= invariants.finished_unchanged(evidence.changes)
    for piece in chosen:
        counts |= piece.check(rows, runs, ctx)
    for name, count in counts.items():
        result.expect(count == 0, f"{name}={count}")
    result.expect(not evidence.unexpected, f"unexpected answers: {evidence.unexpected[:5]}")
    evidence.notes.extend(
        f"finished job {c['job_id']} changed {c['old_status']} -> {c['new_status']}"
        f" at {c['changed_at']}"
        for c in evidence.changes[:5]
    )
    if result.failures:
        result.failures.extend(evidence.notes[:5])
    return {**report.counts, **counts}, acked


def _sample(
    lab: Lab,
    database: str,
    nemesis: Nemesis,
    out: list[dict[str, Any]],
    stop: threading.Event,
) -> None:
    """pg_stat_activity every 2 s (I11), except while a process is paused or cut off:
    its session idles in a transaction because the fault holds it there."""
    while not stop.wait(2.0):
        if time.monotonic() < nemesis.quiet_until:
            continue
        try:
            out.extend(lab.activity(database))
        except Exception:  # the database is restarting: no sample
            continue


def _drain(lab: Lab, database: str, result: RowResult) -> float:
    """Wait until no job is pending, processing or failed (retention deletes the
    finished ones, so a count of finished jobs would never reach the total)."""
    started = time.monotonic()
    left: list[Any] = []
    while time.monotonic() - started < DRAIN_S:
        try:
            left = lab.need_cluster().execute(
                "SELECT status, count(*) FROM vesper_jobs"
                " WHERE status IN ('pending', 'processing', 'failed') GROUP BY status",
                database=database,
            )
        except psycopg.Error:
            left = [("unknown", -1)]
        if not left:
            return time.monotonic() - started
        time.sleep(0.5)
    result.failures.append(f"not drained in {DRAIN_S:.0f}s: {dict(left)}")
    return time.monotonic() - started


def table_rows(conninfo: str) -> list[dict[str, Any]]:
    """The job table and every deleted row (with `deleted_at`), as the checkers read them."""
    # one snapshot for the three reads: a prune between them would show a row both live
    # and deleted (soak seed 21 after a 12 s drain: 4 rows, counted by I9 as duplicates)
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        live = conn.execute(
            "SELECT to_jsonb(j), NULL::timestamptz, NULL::timestamptz FROM vesper_jobs j"
        ).fetchall()
        gone = conn.execute("SELECT row, deleted_at, row_deleted_at FROM soak_deleted").fetchall()
        inserted: dict[str, datetime] = dict(
            conn.execute("SELECT id::text, row_inserted_at FROM soak_inserted").fetchall()
        )
        conn.rollback()
    rows = []
    for data, deleted_at, row_deleted_at in [*live, *gone]:
        row = dict(data)
        row["job_id"] = row.pop("id")
        for name in TIMES:
            if isinstance(row.get(name), str):
                row[name] = datetime.fromisoformat(row[name])
        row["deleted_at"] = deleted_at
        row["row_deleted_at"] = row_deleted_at
        row["row_inserted_at"] = inserted.get(row["job_id"])
        rows.append(row)
    return rows


def table_changes(conninfo: str) -> list[dict[str, Any]]:
    """The updates that changed a done or cancelled row (the soak_changed trigger)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT id::text, old_status, new_status, changed_at FROM soak_changed"
            " ORDER BY changed_at"
        ).fetchall()
    return [
        {"job_id": i, "old_status": old, "new_status": new, "changed_at": at}
        for i, old, new, at in found
    ]


def per_fault(faults: list[dict[str, Any]], runs: list[Any]) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many, the jobs in flight in what it hit, and the worst time
    until the fleet started a job again after it (seconds; for faults that orphan jobs,
    also the worst time until another process claimed an orphan, by the database clock)."""
    ordered = sorted(runs, key=lambda r: r.start)
    starts = [r.start for r in ordered]
    longest = int(120e9)  # no run lasts 2 minutes (the slowest job runs 3 s)
    table: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"injected": 0, "in_flight": 0, "worst_resume_s": 0.0, "worst_reclaim_s": 0.0}
    )
    runs_of: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        runs_of[run.job_id].append(run)
    for fault in faults:
        entry = table[fault["kind"]]
        entry["injected"] += 1
        pid = fault.get("pid")
        ended = fault.get("mono_end") or fault["mono"]
        window = ordered[
            bisect.bisect_left(starts, fault["mono"] - longest) : bisect.bisect_right(starts, ended)
        ]
        hit = [r for r in window if (pid is None or r.pid == pid) and r.end >= fault["mono"]]
        entry["in_flight"] += len(hit)
        i = bisect.bisect_right(starts, ended)
        if i < len(starts):
            entry["worst_resume_s"] = max(
                entry["worst_resume_s"], (starts[i] - fault["mono"]) / 1e9
            )
        if fault["kind"] in ORPHANING and fault.get("db_now") is not None:
            for run in hit:
                later = [
                    r.claimed_at
                    for r in runs_of[run.job_id]
                    if r.start > fault["mono"] and r.pid != pid and r.claimed_at
                ]
                if later:
                    seconds = (min(later) - fault["db_now"]).total_seconds()
                    entry["worst_reclaim_s"] = max(entry["worst_reclaim_s"], seconds)
    return {k: dict(v) for k, v in table.items()}

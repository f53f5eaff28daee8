"""The oracle of the fault matrix: a pure function from evidence to invariant counts.

Inputs (plain data, so that Hypothesis can generate them and a benchmark can reuse them):

- `jobs`: the job table dump, one mapping per row (`job_id`, `status`, `retries`,
  `attempts`, `max_retries`, `idempotency_key`, `priority`, `seq`, `run_at`,
  `created_at`, `started_at`, `finished_at`; times as aware datetimes or None; the
  soak adds `deleted_at`, and `row_inserted_at`/`row_deleted_at` for keyed rows).
- `ledger`: the execution ledger (tests/faults/apps/ledger.py): `event` in
  start/end/abort, `job_id`, `pid`, `token`, `mono` (CLOCK_MONOTONIC ns, one clock for
  the machine), `claimed_at` (ISO text, the store's clock at the claim).
- `responses`: the HTTP response log: `status`, `job_id` (2xx only), `key`
  (Idempotency-Key or None), `body`.
- `faults`: the fault log: `kind`, `pid` (None for a fault of the whole database),
  `mono`, `db_now` (the database clock when the fault was injected), optionally
  `mono_end` (when the injection had taken effect: a consumer that started in between,
  on a claim made before the database went down, may be the fault's victim too) and
  `overlap_ok` (True for SIGSTOP, where a paused process cannot cancel its job).

`check` returns a Report: every invariant I1-I11 of docs/reliability.md as counts of
violations (0 is a pass), plus a few figures (re-executions, recovery seconds).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

import attrs

TERMINAL = frozenset({"done", "dlq", "cancelled"})
FORBIDDEN_IN_BODIES = (
    "Traceback",
    'File "',
    "sqlalchemy",
    "psycopg",
    "SELECT ",
    "INSERT ",
    "/src/",
    "postgresql://",
    "database is locked",
)
INFINITY = float("inf")
ORPHANING = frozenset({"kill", "stop", "blackhole"})  # faults that leave jobs to others

Row = Mapping[str, Any]


@attrs.frozen(kw_only=True)
class Options:
    """What this run can be held to."""

    require_terminal: bool = True  # I2: every acknowledged job ended by the deadline
    recovery_bound: float | None = None  # I7, seconds of database time
    order_pid: int | None = None  # I10: the single claimer whose order is checked
    lease_lost: Sequence[str] = ()  # job ids whose late outcome a worker reported rejected
    activity: Sequence[Row] = ()  # pg_stat_activity samples of vesper sessions
    pg_log: Sequence[str] = ()  # lines of the PostgreSQL server log


@attrs.frozen(kw_only=True)
class Report:
    counts: dict[str, int]
    figures: dict[str, float]
    # what a failure needs to be explained (the story of each unexplained re-run)
    notes: tuple[str, ...] = ()

    def violations(self, *ignore: str) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if v and k not in ignore}

    def line(self) -> str:
        shown = {**self.counts, **{k: round(v, 2) for k, v in self.figures.items()}}
        return " ".join(f"{k}={v}" for k, v in shown.items())


@attrs.frozen
class Execution:
    job_id: str
    pid: int
    token: str | None
    start: int  # mono ns
    end: float  # mono ns, INFINITY while open
    closed: bool  # an end/abort line exists
    completed: bool  # the consumer returned normally (`end`, not failed)
    failed: bool  # the consumer raised: the next start is a scheduled retry
    claimed_at: datetime | None


def executions(ledger: Sequence[Row], faults: Sequence[Row]) -> list[Execution]:
    """Pair each `start` with its `end`/`abort` (same job, pid and token); an open start
    of a killed process ends at the kill."""
    kills = {
        f["pid"]: f["mono"] for f in faults if f.get("pid") is not None and f["kind"] == "kill"
    }
    closes: dict[tuple[str, int, str | None], Row] = {}
    for entry in ledger:
        if entry["event"] in ("end", "abort"):
            closes.setdefault((entry["job_id"], entry["pid"], entry.get("token")), entry)
    result = []
    for entry in sorted(ledger, key=lambda e: (e["mono"], e["pid"])):
        if entry["event"] != "start":
            continue
        key = (entry["job_id"], entry["pid"], entry.get("token"))
        close = closes.get(key)
        if close is not None:
            end: float = close["mono"]
        else:
            end = kills.get(entry["pid"], INFINITY)
        claimed = entry.get("claimed_at")
        result.append(
            Execution(
                job_id=entry["job_id"],
                pid=entry["pid"],
                token=entry.get("token"),
                start=entry["mono"],
                end=end,
                closed=close is not None,
                completed=close is not None
                and close["event"] == "end"
                and not close.get("failed", False),
                failed=close is not None and bool(close.get("failed", False)),
                claimed_at=datetime.fromisoformat(claimed) if claimed else None,
            )
        )
    return result


def check(  # noqa: PLR0915 (one invariant after another, in docs/reliability.md's order)
    jobs: Sequence[Row],
    ledger: Sequence[Row],
    responses: Sequence[Row],
    faults: Sequence[Row],
    options: Options = Options(),
) -> Report:
    counts: dict[str, int] = {}
    figures: dict[str, float] = {}
    by_id = {row["job_id"]: row for row in jobs}
    runs = executions(ledger, faults)
    runs_of: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        runs_of[run.job_id].append(run)

    # I1 durable ack, I2 no loss
    acked = {r["job_id"] for r in responses if 200 <= r["status"] < 300 and r.get("job_id")}
    counts["I1_acked_missing"] = len(acked - by_id.keys())
    if options.require_terminal:
        counts["I2_unfinished"] = sum(1 for row in jobs if row["status"] not in TERMINAL)

    # I3 no concurrent duplicates (excused: an execution of a SIGSTOPped process)
    paused = {f["pid"] for f in faults if f.get("overlap_ok") and f.get("pid") is not None}
    overlaps = excused = 0
    for job_runs in runs_of.values():
        for i, a in enumerate(job_runs):
            for b in job_runs[i + 1 :]:
                if a.start < b.end and b.start < a.end:
                    if a.pid in paused or b.pid in paused:
                        excused += 1
                    else:
                        overlaps += 1
    counts["I3_overlaps"] = overlaps
    figures["I3_overlaps_excused"] = excused

    # I4 exactly one start per job without faults; I5 re-executions explained by faults
    # a start after an attempt that failed is a retry, not a re-execution
    rerun = {
        job_id
        for job_id, job_runs in runs_of.items()
        if any(not prev.failed for prev in job_runs[:-1])
    }
    if not faults:
        counts["I4_duplicate_starts"] = len(rerun)
    in_flight = [r for r in runs if any(_open_at(r, f) for f in faults)]
    # a re-run is explained by a fault that came after an earlier start of the job (in
    # the faulted process) and before the re-run: that earlier attempt was in flight, or
    # had ended but not yet been recorded (kill -9 between the consumer and the commit)
    explained = {
        job_id
        for job_id in rerun
        if any(
            any(
                _started_before(r, fault) and later.start > fault["mono"]
                for r in runs_of[job_id]
                for later in runs_of[job_id]
            )
            for fault in faults
        )
    }
    counts["I5_unexplained_reruns"] = len(rerun - explained)
    notes = tuple(
        _rerun_story(job_id, runs_of[job_id], faults) for job_id in sorted(rerun - explained)[:5]
    )
    figures["I5_reruns"] = len(rerun)
    figures["I5_in_flight_at_faults"] = len(in_flight)

    # I6 fencing: at most one recorded completion per job. A completion followed by a
    # later claim of the job was not recorded (a done job is never claimed again), and
    # one that a worker reported rejected for a lost lease does not count either.
    rejected = Counter(options.lease_lost)
    double = 0
    for job_id, job_runs in runs_of.items():
        recorded = sum(
            1
            for r in job_runs
            if r.completed and not any(other.start > r.end for other in job_runs)
        )
        if recorded - rejected[job_id] > 1:
            double += 1
    counts["I6_double_recorded"] = double

    # I7 bounded recovery (database time), for faults of one process
    worst = 0.0
    over = unrecovered = cancelled_instead = 0
    for fault in faults:
        if fault.get("pid") is None or fault.get("db_now") is None:
            continue
        if fault["kind"] not in ORPHANING:
            continue
        for run in runs:
            if run.pid != fault["pid"] or not _open_at(run, fault):
                continue
            # another process's claim, or the faulted process's own new claim once it
            # resumed (a pause or a black-hole ends; the job expired and was due again)
            later = [
                r
                for r in runs_of[run.job_id]
                if r.start > fault["mono"]
                and (r.pid != fault["pid"] or r.token != run.token)
                and r.claimed_at
            ]
            if not later:
                # a job whose cancel was requested ends cancelled when its lease
                # expires, never claimed again (README, "Stopping a running job"):
                # recovered by the cancel, not lost
                row = by_id.get(run.job_id)
                if row and row["status"] == "cancelled" and row.get("cancel_requested_at"):
                    cancelled_instead += 1
                else:
                    unrecovered += 1
                continue
            first = min(later, key=lambda r: r.start)
            assert first.claimed_at is not None
            seconds = (first.claimed_at - fault["db_now"]).total_seconds()
            worst = max(worst, seconds)
            if options.recovery_bound is not None and seconds > options.recovery_bound:
                over += 1
    counts["I7_over_bound"] = over
    counts["I7_unrecovered"] = unrecovered
    figures["I7_cancelled_instead"] = cancelled_instead
    figures["I7_max_recovery_s"] = worst

    # I8 attempts counted at claim: nothing starts after a job reached dlq
    after_dlq = 0
    for job_id, job_runs in runs_of.items():
        row = by_id.get(job_id)
        if row is None or row["status"] != "dlq" or row.get("finished_at") is None:
            continue
        after_dlq += sum(1 for r in job_runs if r.claimed_at and r.claimed_at > row["finished_at"])
    counts["I8_starts_after_dlq"] = after_dlq

    # I9 idempotency: one row per key; one job per key in the responses
    # (a key is free again once its job is deleted: rows whose lives follow one another
    # are not a violation; `deleted_at` is set on rows the soak saw deleted)
    keyed: dict[str, list[Row]] = defaultdict(list)
    for row in jobs:
        if row.get("idempotency_key"):
            keyed[row["idempotency_key"]].append(row)
    overlapping = {
        key: rows for key, rows in keyed.items() if len(rows) > 1 and not _one_after_another(rows)
    }
    counts["I9_keys_with_rows_over_1"] = len(overlapping)
    notes += tuple(_key_story(key, rows) for key, rows in sorted(overlapping.items())[:5])
    answered: dict[str, set[str]] = defaultdict(set)
    for r in responses:
        if r.get("key") and r.get("job_id") and 200 <= r["status"] < 300:
            answered[r["key"]].add(r["job_id"])
    counts["I9_keys_with_jobs_over_1"] = sum(
        1
        for ids in answered.values()
        if len(ids) > 1
        and not (ids <= by_id.keys() and _one_after_another([by_id[i] for i in ids]))
    )

    # I10 order of a single claimer
    if options.order_pid is not None:
        mine = [r for r in runs if r.pid == options.order_pid]
        seen: set[str] = set()
        started = []
        for r in sorted(mine, key=lambda r: r.start):
            if r.job_id not in seen:
                seen.add(r.job_id)
                started.append(r.job_id)
        expected = sorted(
            (j for j in started if j in by_id),
            key=lambda j: (-by_id[j]["priority"], by_id[j]["run_at"], by_id[j]["seq"]),
        )
        counts["I10_out_of_order"] = sum(
            1 for a, b in zip(started, expected, strict=True) if a != b
        )

    # I11 hygiene
    counts["I11_5xx_not_503"] = sum(
        1 for r in responses if r["status"] >= 500 and r["status"] != 503
    )
    counts["I11_leaky_bodies"] = sum(
        1 for r in responses if any(s in (r.get("body") or "") for s in FORBIDDEN_IN_BODIES)
    )
    counts["I11_idle_in_transaction_over_1s"] = sum(
        1
        for a in options.activity
        if a.get("state") == "idle in transaction" and (a.get("state_age") or 0) > 1.0
    )
    # An idle session holds no transaction of its client's. PostgreSQL still shows one
    # for the instant it reads a NOTIFY in an idle listener, dated from that session's
    # last statement (StartTransaction takes xact_start from stmtStartTimestamp): the
    # LISTEN connection "held a transaction of 187 s" in one R13 sample of 29,299.
    long_transactions = [
        a for a in options.activity if a.get("state") != "idle" and (a.get("xact_age") or 0) > 5.0
    ]
    counts["I11_transaction_over_5s"] = len(long_transactions)
    notes += tuple(
        f"transaction of {a['xact_age']:.1f}s: {a.get('application_name')} "
        f"state={a.get('state')} query={str(a.get('query'))[:160]!r}"
        for a in long_transactions[:5]
    )
    counts["I11_deadlocks"] = sum(1 for line in options.pg_log if "deadlock detected" in line)
    return Report(counts=counts, figures=figures, notes=notes)


def _one_after_another(rows: Sequence[Row]) -> bool:
    """Did each of these rows (of one key) exist only after the one before was deleted?

    By the moments the rows themselves were inserted and deleted (`row_inserted_at`,
    `row_deleted_at`) where the evidence has them: `created_at` and `deleted_at` are
    their statements' start, and an INSERT that began before a DELETE may wait for it
    and insert the key the DELETE freed (tests/faults/soak/run.py)."""

    def inserted(row: Row) -> datetime:
        moment: datetime = row.get("row_inserted_at") or row["created_at"]
        return moment

    def deleted(row: Row) -> datetime | None:
        moment: datetime | None = row.get("row_deleted_at") or row.get("deleted_at")
        return moment

    ordered = sorted(rows, key=inserted)
    return all(
        (gone := deleted(a)) is not None and gone <= inserted(b) for a, b in pairwise(ordered)
    )


def _key_story(key: str, rows: Sequence[Row]) -> str:
    """One idempotency key's rows, oldest first: what an I9 failure needs explained."""
    lives = ", ".join(
        f"{row['job_id'][:8]} {row['status']} type={row.get('type')}"
        f" created {_iso(row.get('created_at'))} deleted {_iso(row.get('deleted_at'))}"
        f" (row inserted {_iso(row.get('row_inserted_at'))}"
        f" deleted {_iso(row.get('row_deleted_at'))})"
        for row in sorted(rows, key=lambda row: row["created_at"])
    )
    return f"key {key!r}: {lives}"


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="microseconds") if moment is not None else "-"


def _taken_effect(fault: Row) -> int:
    end: int = fault.get("mono_end") or fault["mono"]
    return end


def _started_before(run: Execution, fault: Row) -> bool:
    if fault.get("pid") is not None and run.pid != fault["pid"]:
        return False
    return run.start <= _taken_effect(fault)


def _open_at(run: Execution, fault: Row) -> bool:
    """Was `run` in flight in the faulted process (or anywhere, for a database fault)?"""
    if fault.get("pid") is not None and run.pid != fault["pid"]:
        return False
    return run.start <= _taken_effect(fault) and (not run.closed or run.end > fault["mono"])


def _rerun_story(job_id: str, runs: Sequence[Execution], faults: Sequence[Row]) -> str:
    """A re-run no fault explains: each run and each fault, in seconds from the first
    start of the job."""
    origin = runs[0].start
    events = [
        f"run pid={r.pid} token={(r.token or '')[:8]} {(r.start - origin) / 1e9:+.3f}s.."
        + ("open" if r.end == INFINITY else f"{(r.end - origin) / 1e9:+.3f}s")
        + (" failed" if r.failed else "")
        for r in runs
    ]
    events += [
        f"fault {f['kind']} pid={f.get('pid')} {(f['mono'] - origin) / 1e9:+.3f}s"
        + (f"..{(f['mono_end'] - origin) / 1e9:+.3f}s" if f.get("mono_end") else "")
        for f in faults
    ]
    return f"job {job_id}: " + ", ".join(events)

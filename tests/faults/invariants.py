"""The invariants of the production-lifecycle features (I12-I17 of docs/reliability.md),
as pure functions over the soak's evidence, beside checker.py's I1-I11.

Each function returns counts of violations (0 is a pass) under names that say what was
seen. The evidence:

- `rows`: the job table at the end plus every deleted row (a trigger the soak installs
  logs each DELETE with the whole row and `deleted_at`, the database clock), as
  mappings with `job_id`, `status`, `finished_at`, `started_at`, `result`, `queue`,
  `concurrency_key`, `idempotency_key`, `deleted_at` (None for a live row).
- `runs`: checker.executions() of the ledger.
- the soak's own logs: rolled-back transactions, acknowledged cancels, waiter answers,
  jobs acknowledged by the Python producers.

Each executions' interval lies inside its claim's interval in the database (the ledger's
`start` follows the claim, its `end` precedes the outcome's commit), so an overlap seen
in the ledger is an overlap in the database: these checks can miss a violation, never
invent one. Executions of a paused (SIGSTOP) process are left out where a paused
process cannot stop itself (its lease expired; the store no longer counts it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from tests.faults.checker import TERMINAL, Execution, _started_before

Row = Mapping[str, Any]


@attrs.frozen
class QueueLimits:
    """A queue's settings as the soak set them (None: no such limit)."""

    concurrency: int | None = None
    rate: tuple[int, float] | None = None  # (claims, window seconds)
    key_concurrency: int | None = None


def _times_over(intervals: Sequence[tuple[float, float]], limit: int) -> int:
    """How many starts found `limit` or more intervals already running."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),
    )
    over = now = 0
    for _, step in events:
        now += step
        if step > 0 and now > limit:
            over += 1
    return over


def queue_limits(
    rows: Sequence[Row],
    runs: Sequence[Execution],
    limits: Mapping[str, QueueLimits],
    *,
    paused_pids: Collection[int] = (),
) -> dict[str, int]:
    """I12: a queue never runs more than its concurrency, one concurrency_key never more
    than key_concurrency (1: serial), and no window of the rate's period holds more
    claims than the rate allows (claim times by the database clock)."""
    by_id = {row["job_id"]: row for row in rows}
    counts = {"I12_concurrency_exceeded": 0, "I12_key_concurrency_exceeded": 0}
    counts["I12_rate_exceeded"] = 0
    per_queue: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        row = by_id.get(run.job_id)
        if row is not None and row.get("queue") in limits:
            per_queue[row["queue"]].append(run)
    for queue, queue_runs in per_queue.items():
        limit = limits[queue]
        live = [r for r in queue_runs if r.pid not in paused_pids]
        if limit.concurrency is not None:
            spans = [(float(r.start), r.end) for r in live]
            counts["I12_concurrency_exceeded"] += _times_over(spans, limit.concurrency)
        if limit.key_concurrency is not None:
            per_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for r in live:
                key = by_id[r.job_id].get("concurrency_key")
                if key is not None:
                    per_key[key].append((float(r.start), r.end))
            counts["I12_key_concurrency_exceeded"] += sum(
                _times_over(spans, limit.key_concurrency) for spans in per_key.values()
            )
        if limit.rate is not None:
            allowed, period = limit.rate
            claims = sorted({(r.job_id, r.token): r.claimed_at for r in queue_runs}.values())
            stamps = [c for c in claims if c is not None]
            window = timedelta(seconds=period) - timedelta(milliseconds=1)
            counts["I12_rate_exceeded"] += sum(
                1 for i in range(len(stamps) - allowed) if stamps[i + allowed] - stamps[i] < window
            )
    return counts


def _peak(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals running at once."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def queue_peaks(
    rows: Sequence[Row], runs: Sequence[Execution], limits: Mapping[str, QueueLimits]
) -> dict[str, int]:
    """How close each limited queue came to its limit (figures, not violations): the
    most executions at once, the most of one key at once, the most claims in one
    window of the rate's period. A check whose limit was never reached proves little."""
    by_id = {row["job_id"]: row for row in rows}
    peaks: dict[str, int] = {}
    for queue, limit in limits.items():
        mine = [r for r in runs if (by_id.get(r.job_id) or {}).get("queue") == queue]
        if limit.concurrency is not None:
            peaks[f"{queue}_peak_running"] = _peak([(float(r.start), r.end) for r in mine])
        if limit.key_concurrency is not None:
            per_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for r in mine:
                key = by_id[r.job_id].get("concurrency_key")
                if key is not None:
                    per_key[key].append((float(r.start), r.end))
            peaks[f"{queue}_peak_per_key"] = max(map(_peak, per_key.values()), default=0)
        if limit.rate is not None:
            period = timedelta(seconds=limit.rate[1])
            claims = {(r.job_id, r.token): r.claimed_at for r in mine}
            stamps = sorted(c for c in claims.values() if c is not None)
            most = 0
            for i, first in enumerate(stamps):
                j = i
                while j < len(stamps) and stamps[j] - first < period:
                    j += 1
                most = max(most, j - i)
            peaks[f"{queue}_peak_claims_per_window"] = most
    return peaks


def schedule_ticks(
    rows: Sequence[Row],
    name: str,
    *,
    period_s: float,
    first: datetime,
    last: datetime,
    outages: Sequence[tuple[datetime, datetime]] = (),
    grace_s: float = 10.0,
) -> dict[str, int]:
    """I13: at most one job per tick of schedule `name` (its key is
    `periodic:<name>:<tick>`), and between `first` and `last` no tick without a job,
    except ticks inside an outage of the whole database (or `grace_s` after it)."""
    prefix = f"periodic:{name}:"
    per_tick: dict[datetime, int] = defaultdict(int)
    for row in rows:
        key = row.get("idempotency_key") or ""
        if key.startswith(prefix):
            per_tick[datetime.fromisoformat(key[len(prefix) :].replace("Z", "+00:00"))] += 1
    duplicated = sum(1 for n in per_tick.values() if n > 1)
    missing = 0
    tick = first
    step = timedelta(seconds=period_s)
    grace = timedelta(seconds=grace_s)
    while tick <= last:
        excused = any(start <= tick <= end + grace for start, end in outages)
        if tick not in per_tick and not excused:
            missing += 1
        tick += step
    return {"I13_ticks_with_jobs_over_1": duplicated, "I13_ticks_missing": missing}


def rolled_back(
    rolled_back_ids: Collection[str], rows: Sequence[Row], runs: Sequence[Execution]
) -> dict[str, int]:
    """I14: a job enqueued in a transaction that rolled back never exists and never runs."""
    ids = set(rolled_back_ids)
    return {
        "I14_rolled_back_exists": sum(1 for row in rows if row["job_id"] in ids),
        "I14_rolled_back_ran": len({r.job_id for r in runs if r.job_id in ids}),
    }


def retention(rows: Sequence[Row], ages: Mapping[str, float]) -> dict[str, int]:
    """I15: a deleted row was finished, and finished at least its status's retention age
    before it was deleted (both by the database clock)."""
    unfinished = early = 0
    for row in rows:
        deleted = row.get("deleted_at")
        if deleted is None:
            continue
        if row["status"] not in TERMINAL or row.get("finished_at") is None:
            unfinished += 1
        elif deleted - row["finished_at"] < timedelta(seconds=ages[row["status"]]):
            early += 1
    return {"I15_deleted_unfinished": unfinished, "I15_deleted_before_its_age": early}


def accounted(acked_ids: Iterable[str], rows: Sequence[Row]) -> dict[str, int]:
    """I1/I2 over every producer: each acknowledged job exists (or was deleted after it
    finished, which I15 checks) and ended done, dlq or cancelled."""
    by_id = {row["job_id"]: row for row in rows}
    missing = unfinished = 0
    for job_id in set(acked_ids):
        row = by_id.get(job_id)
        if row is None:
            missing += 1
        elif row["status"] not in TERMINAL:
            unfinished += 1
    return {"I2_acked_missing": missing, "I2_acked_unfinished": unfinished}


def cancels(
    acks: Sequence[Row],
    rows: Sequence[Row],
    runs: Sequence[Execution],
    changes: Sequence[Row] = (),
) -> dict[str, int]:
    """I16: a job whose cancel was acknowledged ends cancelled, or done if it finished
    first; no outcome is recorded for it once it ended; it is never claimed again.

    An ack of a pending job (200) has `at`, the database time the API reported it
    cancelled: no claim after it. An ack of a running job (202) has `claimed_at`, the
    claim the answer showed running (`started_at`): no claim after that one. (Not
    `cancel_requested_at`: a cancel that waited on the row lock of the claim committing
    before it is dated before that claim.) `changes`: the soak's log of updates to a
    done or cancelled row (status, result or finished_at changed): none may touch an
    acknowledged cancel, whose job nothing in the soak retries."""
    by_id = {row["job_id"]: row for row in rows}
    runs_of: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        runs_of[run.job_id].append(run)
    changed: dict[str, int] = defaultdict(int)
    for change in changes:
        changed[change["job_id"]] += 1
    wrong = later = after = 0
    for ack in acks:
        row = by_id.get(ack["job_id"])
        if row is not None and row["status"] not in ("cancelled", "done"):
            wrong += 1
        since = ack["claimed_at"] if ack.get("claimed_at") is not None else ack["at"]
        later += sum(
            1 for r in runs_of[ack["job_id"]] if r.claimed_at is not None and r.claimed_at > since
        )
        after += changed[ack["job_id"]]
    return {
        "I16_cancelled_then_other_outcome": wrong,
        "I16_claimed_after_cancel": later,
        "I16_outcome_after_cancel": after,
    }


def finished_unchanged(changes: Sequence[Row]) -> dict[str, int]:
    """I6 over the whole table: a done or cancelled row never changes (status, result,
    finished_at), so no late or fenced outcome overwrote a recorded one. The soak
    retries only dlq jobs; a retry of a cancelled job would be a change here."""
    return {"I6_finished_job_changed": len(changes)}


def snoozes(
    rows: Sequence[Row],
    runs: Sequence[Execution],
    faults: Sequence[Row],
    *,
    job_type: str = "snooze",
) -> dict[str, int]:
    """I18: a job whose consumer snoozes once (`vesper.Snooze(payload["snooze"])` while
    its `snoozes` is 0) ends done with `snoozes` 1, and never runs while snoozed.

    "While snoozed", two ways. Ledger: no claim of the job less than the delay after
    the snoozing attempt's claim (the snooze commits after that claim, so the window
    checked is inside the real one: it can miss, never invent), unless a fault came
    between the snoozing start and that claim (the snooze may not have been recorded:
    the I5 rule). Row: the done job's last claim (`started_at`) is not before its
    `run_at`, which the recorded snooze set to its commit plus the delay."""
    snoozers = {row["job_id"]: row for row in rows if row.get("type") == job_type}
    runs_of: dict[str, list[Execution]] = defaultdict(list)
    for run in runs:
        if run.job_id in snoozers:
            runs_of[run.job_id].append(run)
    not_done = never = twice = early = 0
    for job_id, row in snoozers.items():
        if row["status"] != "done":
            not_done += 1
            continue
        count = row.get("snoozes") or 0
        never += count < 1
        twice += count > 1
        if row.get("started_at") and row.get("run_at") and row["started_at"] < row["run_at"]:
            early += 1
        delay = timedelta(seconds=float((row.get("payload") or {}).get("snooze", 1.0)))
        job_runs = runs_of[job_id]
        for snoozed in (r for r in job_runs if r.failed and r.claimed_at is not None):
            assert snoozed.claimed_at is not None
            for later in job_runs:
                if later.claimed_at is None or not (
                    snoozed.claimed_at < later.claimed_at < snoozed.claimed_at + delay
                ):
                    continue
                if not any(
                    _started_before(snoozed, fault) and later.start > fault["mono"]
                    for fault in faults
                ):
                    early += 1
    return {
        "I18_snoozer_not_done": not_done,
        "I18_never_snoozed": never,
        "I18_snoozed_twice": twice,
        "I18_ran_while_snoozed": early,
    }


def results(rows: Sequence[Row], runs: Sequence[Execution]) -> dict[str, int]:
    """I17: a done job's stored result is the one its recorded attempt returned: the
    result names a claim that completed in the ledger, and that claim is the job's last
    (`started_at`), so a fenced late attempt never overwrote it."""
    completed: dict[str, set[str | None]] = defaultdict(set)
    for run in runs:
        if run.completed:
            completed[run.job_id].add(run.token)
    foreign = stale = 0
    for row in rows:
        result = row.get("result")
        if row["status"] != "done" or not isinstance(result, Mapping) or "token" not in result:
            continue
        if result["token"] not in completed[row["job_id"]]:
            foreign += 1
        claimed = result.get("claimed_at")
        if (
            claimed
            and row.get("started_at")
            and datetime.fromisoformat(claimed) != row["started_at"]
        ):
            stale += 1
    return {"I17_result_of_no_completed_run": foreign, "I17_result_not_of_last_claim": stale}


def waiters(answers: Sequence[Row], rows: Sequence[Row]) -> dict[str, int]:
    """A waiter told `done` (with a result) saw what the store keeps: the job stays done
    with that result (a done job never changes; a deleted one keeps its last row)."""
    by_id = {row["job_id"]: row for row in rows}
    wrong = 0
    for answer in answers:
        if answer["status"] != "done":
            continue
        row = by_id.get(answer["job_id"])
        if row is None or row["status"] != "done" or row.get("result") != answer.get("result"):
            wrong += 1
    return {"I17_waiter_saw_other_outcome": wrong}

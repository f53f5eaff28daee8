"""R3a (kill -9 mid-job) and R3b (a paused or cut-off worker: fencing)."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from datetime import datetime
from typing import Any

import psycopg

from tests.faults.checker import Options
from tests.faults.lab import BOUND_S, Lab, RowResult, kill, wait_for
from tests.faults.rows.common import enqueue, scaled, timed, wait_drained
from tests.integration.harness import WorkerProcess
from vesper.adapters.sqlcore.tables import JOBS, WORKERS
from vesper.domain.submission import JobRequest


def _fleet_pids(lab: Lab, database: str) -> set[int]:
    rows = lab.need_cluster().execute("SELECT pid FROM vesper_workers", database=database)
    return {pid for (pid,) in rows}


# R3a's kill phases: where the victim is when it dies. The test holds a lock that stops
# the victim at that point (a table lock for the claim, the victim's job rows for the
# outcome, its registry row for the heartbeat), kills it there, then lets go.
PHASES = ("mid-sleep", "claim", "outcome", "heartbeat")
# the claim statement, told apart from the lease expiry that also waits on the table
_CLAIM_LIKE = "%attempts = %attempts + 1%"


@timed
def r3a(lab: Lab, *, phase: str = "mid-sleep") -> RowResult:
    """kill -9 of a worker at `phase`: nothing lost, only its jobs re-run, in bound."""
    if phase not in PHASES:
        raise ValueError(f"unknown R3a phase {phase!r}; known: {', '.join(PHASES)}")
    result = RowResult("R3a" if phase == "mid-sleep" else f"R3a-{phase}")
    total = scaled(lab, 72, 600)
    sleep = scaled(lab, (1.0, 2.0), (2.0, 4.0))
    database = lab.pg_database()
    app = lab.pg_app(database)
    enqueue(
        app,
        [
            JobRequest(type="record", payload={"sleep": sleep[0], "sleep_max": sleep[1]})
            for _ in range(total)
        ],
    )
    cluster = lab.need_cluster()
    env = lab.env(cluster.env(database), WORKERS="4")
    with psycopg.connect(cluster.conninfo(database)) as holder:
        procs = _stop_at(lab, phase, env, database, holder, result)
        if procs is None:
            return result
        victim = procs[0]
        kill(victim)
        lab.fault("kill", victim.pid, database=database)
        killed = time.monotonic()
        victim.wait(10)
        holder.rollback()  # the dead session's statement runs on or is rolled back
    if phase == "claim":
        procs += [lab.worker(env) for _ in range(2)]
    # its jobs in flight, or ended but not yet recorded (kill between consumer and commit)
    in_flight = {
        e["job_id"] for e in lab.ledger() if e["pid"] == victim.pid and e["event"] == "start"
    }
    gone = wait_for(lambda: victim.pid not in _fleet_pids(lab, database), timeout=30, interval=0.1)
    reaped_after = time.monotonic() - killed
    wait_drained(lab, result, database, total, timeout=scaled(lab, 90, 600))
    rows = lab.dump_pg(database)
    report = lab.check(rows, Options(recovery_bound=BOUND_S))
    result.expect_clean(report)
    reruns = {
        j
        for j, n in Counter(e["job_id"] for e in lab.ledger() if e["event"] == "start").items()
        if n > 1
    }
    by_id = {r["job_id"]: r for r in rows}
    result.figures.update(
        total=total,
        done=sum(1 for r in rows if r["status"] == "done"),
        victim_started=len(in_flight),
        reruns=len(reruns),
        reaped_s=reaped_after,
    )
    result.expect(reruns <= in_flight, f"re-run outside the victim's jobs: {reruns - in_flight}")
    # A slot frees when its consumer returns, before the outcome is committed: a job that
    # ended but was not yet recorded at the kill is in flight too, beside the 4 running.
    ended_unrecorded = {
        e["job_id"]
        for e in lab.ledger()
        if e["pid"] == victim.pid and e["event"] == "end" and e["job_id"] in reruns
    }
    result.figures["ended_unrecorded"] = len(ended_unrecorded)
    result.expect(
        len(reruns) <= 4 + len(ended_unrecorded),
        f"{len(reruns)} re-runs > 4 running + {len(ended_unrecorded)} ended unrecorded",
    )
    if report.counts.get("I7_over_bound"):
        result.failures.append(_recovery_details(lab, rows, victim.pid, reruns))
    result.expect(
        all(by_id[j]["retries"] == 1 for j in reruns),
        f"retries of re-run jobs: {[by_id[j]['retries'] for j in reruns]} (expected 1 each)",
    )
    result.expect(
        gone is not None and reaped_after <= LEASE_DEAD_AFTER + 0.5 + 1 + 1,
        f"victim left the fleet after {reaped_after:.1f}s",
    )
    survivors = {p.pid for p in procs[1:]}
    # with the claim phase the survivors start after the kill: count from their first end
    after = lab.faults[0]["mono"] if phase != "claim" else _first_end(lab, survivors)
    gaps = _survivor_gaps(lab, survivors, after=after)
    result.figures["survivor_max_gap_s"] = gaps
    result.expect(gaps <= 2.0 + 1.0, f"survivors idle for {gaps:.1f}s")
    for proc in procs[1:]:
        proc.signal(signal.SIGTERM)
    for proc in procs[1:]:
        result.expect(proc.wait(30) == 0, "a survivor did not exit 0 on SIGTERM")
    return result


def _recovery_details(lab: Lab, rows: list[dict[str, Any]], victim: int, reruns: set[str]) -> str:
    """Each re-run job's story around the kill, for a recovery over the bound: the
    victim's start/end and the re-run's claim, in seconds from the kill."""
    fault = lab.faults[0]
    by_id = {r["job_id"]: r for r in rows}
    parts = []
    for job_id in sorted(reruns):
        entries = [e for e in lab.ledger() if e["job_id"] == job_id]
        mine = [
            (e["event"], round((e["mono"] - fault["mono"]) / 1e9, 3), str(e.get("token"))[:8])
            for e in entries
            if e["pid"] == victim
        ]
        claims = [
            datetime.fromisoformat(e["claimed_at"])
            for e in entries
            if e["pid"] != victim and e["event"] == "start" and e.get("claimed_at")
        ]
        reclaimed = (min(claims) - fault["db_now"]).total_seconds() if claims else None
        row = by_id.get(job_id, {})
        run_at = row.get("run_at")
        due = (run_at - fault["db_now"]).total_seconds() if run_at else None
        parts.append(
            f"{job_id[:8]} victim={mine} reclaimed={reclaimed} run_at={due} "
            f"retries={row.get('retries')} seq={row.get('seq')}"
        )
    return "recovery: " + ", ".join(parts)


def _stop_at(
    lab: Lab,
    phase: str,
    env: dict[str, str],
    database: str,
    holder: psycopg.Connection[Any],
    result: RowResult,
) -> list[WorkerProcess] | None:
    """Start the workers and bring the victim (first of them) to `phase`; None if it
    never got there (the failure is recorded)."""
    if phase == "claim":
        # every claim waits behind this lock: the victim, started alone, dies inside
        # its first claim statement
        holder.execute(f"LOCK TABLE {JOBS} IN EXCLUSIVE MODE")
        victim = lab.worker(env)
        stopped = wait_for(lambda: _blocked_by(lab, database, holder, _CLAIM_LIKE), timeout=60)
        if stopped is None:
            result.failures.append("the victim's claim never reached the database")
            return None
        procs = [victim]
    else:
        procs = [lab.worker(env) for _ in range(3)]
        victim = procs[0]
        if not wait_for(lambda: len(lab.open_starts(victim.pid)) >= 4, timeout=60, interval=0.05):
            result.failures.append("the victim never held 4 jobs")
            return None
        if phase == "outcome":
            held = _lock_jobs_of(holder, victim.pid)
            # the victim's consumer ends; its complete then waits on the locked rows
            ended = wait_for(lambda: _ended(lab, victim.pid, held), timeout=30, interval=0.02)
            if ended is None:
                result.failures.append("no job of the victim ended while its rows were held")
                return None
            time.sleep(0.3)  # the outcome flush is issued and blocked
        elif phase == "heartbeat":
            holder.execute(f"SELECT 1 FROM {WORKERS} WHERE pid = %s FOR UPDATE", (victim.pid,))
            if wait_for(lambda: _blocked_by(lab, database, holder), timeout=10) is None:
                result.failures.append("the victim's heartbeat never waited on its row")
                return None
    return procs


def _blocked_by(lab: Lab, database: str, holder: psycopg.Connection[Any], query: str = "%") -> bool:
    """Whether a session of `database` running `query` (a LIKE pattern) waits on a lock
    that `holder` holds."""
    rows = lab.need_cluster().execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND %s = ANY(pg_blocking_pids(pid)) AND query LIKE %s",
        (database, holder.info.backend_pid, query),
        database=database,
    )
    return bool(rows[0][0])


def _lock_jobs_of(holder: psycopg.Connection[Any], pid: int) -> set[str]:
    rows = holder.execute(
        f"SELECT CAST(j.id AS TEXT) FROM {JOBS} j JOIN {WORKERS} w ON j.worker_id = w.id "
        "WHERE w.pid = %s AND j.status = 'processing' FOR UPDATE OF j",
        (pid,),
    ).fetchall()
    return {job_id for (job_id,) in rows}


def _ended(lab: Lab, pid: int, jobs: set[str]) -> bool:
    return any(
        e["pid"] == pid and e["event"] == "end" and e["job_id"] in jobs for e in lab.ledger()
    )


def _first_end(lab: Lab, pids: set[int]) -> int:
    ends = [e["mono"] for e in lab.ledger() if e["pid"] in pids and e["event"] == "end"]
    return min(ends) if ends else time.monotonic_ns()


LEASE_DEAD_AFTER = 4.0


def _survivor_gaps(lab: Lab, pids: set[int], *, after: int) -> float:
    """The longest stretch (s) in which the survivors ended no job, kill to last end."""
    ends = sorted(
        e["mono"]
        for e in lab.ledger()
        if e["pid"] in pids and e["event"] == "end" and e["mono"] >= after
    )
    if not ends:
        return float("inf")
    points = [after, *ends]
    return max((b - a) / 1e9 for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0


@timed
def r3b(lab: Lab, *, variant: str = "stop") -> RowResult:
    """A worker paused (SIGSTOP) or cut off (proxy black-hole) for 3 leases with 4 jobs.

    Others re-claim them within the bound; its late complete/renew changes nothing and it
    reports the lease lost; each job is done once, by the new owner, retries == 1. With
    the proxy the victim runs on and must abort by its local deadline: 0 overlap.
    """
    result = RowResult(f"R3b-{variant}")
    # the victim's 4 plus one job per free slot elsewhere: no backlog ahead of the
    # re-queued jobs, so the row measures detection and fencing (R3a has the backlog)
    total = 12
    database = lab.pg_database()
    app = lab.pg_app(database)
    # the victim's jobs outlive the pause (and a lease): it must be stopped, not finish
    long = {"sleep_first": 40, "sleep": 1.0}
    enqueue(app, [JobRequest(type="record", priority=5, payload=long) for _ in range(4)])
    enqueue(
        app,
        [
            JobRequest(type="record", payload={"sleep": 1.5, "sleep_max": 3.0})
            for _ in range(total - 4)
        ],
    )
    cluster = lab.need_cluster()
    proxy = lab.proxy() if variant == "proxy" else None
    env = lab.env(cluster.env(database), WORKERS="4")
    victim = lab.worker(env if proxy is None else {**env, "DB_PORT": str(proxy.port)})
    if not wait_for(lambda: len(lab.open_starts(victim.pid)) >= 4, timeout=60, interval=0.05):
        result.failures.append("the victim never held 4 jobs")
        return result
    others = [lab.worker(env) for _ in range(2)]
    if not wait_for(lambda: len(_fleet_pids(lab, database)) == 3, timeout=30):
        result.failures.append("the other workers did not register")
        return result
    if proxy is None:
        kill(victim, signal.SIGSTOP)
    else:
        proxy.blackhole()
    lab.fault(
        "stop" if proxy is None else "blackhole",
        victim.pid,
        database=database,
        overlap_ok=proxy is None,
    )
    held = lab.open_starts(victim.pid)
    pause = scaled(lab, 3 * 4.0, 3 * 6.0)
    time.sleep(pause)  # the fault's duration is the point of the row
    if proxy is None:
        kill(victim, signal.SIGCONT)
    else:
        proxy.resume()
    wait_drained(lab, result, database, total, timeout=scaled(lab, 90, 400))
    reported = wait_for(lambda: held <= set(lab.lease_lost([victim])), timeout=10, interval=0.2)
    rows = lab.dump_pg(database)
    by_id = {r["job_id"]: r for r in rows}
    report = lab.check(
        rows, Options(recovery_bound=BOUND_S, lease_lost=lab.lease_lost([victim, *others]))
    )
    # the paused process cannot cancel itself: its overlap is excused there (I3)
    result.expect_clean(report)
    reruns = {
        j
        for j, n in Counter(e["job_id"] for e in lab.ledger() if e["event"] == "start").items()
        if n > 1
    }
    result.figures.update(total=total, held=len(held), reruns=len(reruns))
    result.expect(reruns <= held, f"re-run outside the victim's jobs: {reruns - held}")
    result.expect(
        reported is not None,
        f"victim reported lease lost for {set(lab.lease_lost([victim])) & held} of {held}",
    )
    result.expect(
        all(by_id[j]["status"] == "done" and by_id[j]["retries"] == 1 for j in held),
        f"held jobs: {[(by_id[j]['status'], by_id[j]['retries']) for j in held]}",
    )
    finishers = {
        e["job_id"]: e["pid"]
        for e in lab.ledger()
        if e["event"] == "end" and e["job_id"] in held and e["pid"] != victim.pid
    }
    result.expect(set(finishers) == held, "a held job was not finished by a new owner")
    result.expect(victim.popen.poll() is None, "the victim died instead of carrying on")
    return result

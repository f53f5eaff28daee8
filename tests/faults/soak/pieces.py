"""The soak's workload, one piece per feature: each starts its own threads, stops when
the run says so (or at its deadline), and logs what the checkers need in the shared
Evidence. A piece whose feature is not on this branch says so in `available()` and the
run leaves it out (and names it).

Every loop is bounded: by the stop event, the run's hard deadline, and a give-up time
for one submission's retries (a 503, a connection refused by a killed API, a database
restart: the same key again, so a retry never makes a second job).
"""

from __future__ import annotations

import importlib.util
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import httpx
import psycopg

import vesper
from tests.faults import invariants
from tests.faults.apps.soak import SCHEDULE
from tests.faults.checker import Execution
from tests.faults.producer import _log
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App

Row = Mapping[str, Any]
RETRYABLE = frozenset({0, 429, 503})
GIVE_UP_S = 90.0  # one submission's retries (the longest fault is a 15 s skew swap)


@attrs.define
class Evidence:
    """What the workload saw; appended to from many threads (list.append is atomic)."""

    responses: list[dict[str, Any]]  # the lab's HTTP response log (I1, I9, I11)
    acked: list[str] = attrs.field(factory=list)  # ids acknowledged outside POST /jobs
    rolled_back: list[str] = attrs.field(factory=list)  # I14
    cancel_acks: list[dict[str, Any]] = attrs.field(factory=list)  # I16
    running_cancels: list[dict[str, Any]] = attrs.field(factory=list)  # I16, 202s
    changes: list[dict[str, Any]] = attrs.field(factory=list)  # finished rows updated (I6)
    figures: dict[str, int] = attrs.field(factory=dict)  # the pieces' own counts
    answers: list[dict[str, Any]] = attrs.field(factory=list)  # waiters (I17)
    recent: deque[str] = attrs.field(factory=lambda: deque(maxlen=2000))  # for waiters
    unexpected: list[str] = attrs.field(factory=list)  # a 4xx the workload did not expect
    notes: list[str] = attrs.field(factory=list)  # what explains a violation


@attrs.define
class Context:
    urls: Callable[[], list[str]]
    app: App  # the harness's own App on the store (Python producers, app.wait)
    conninfo: str  # psycopg, for transactions
    evidence: Evidence
    seed: int
    stop: threading.Event
    deadline: float  # monotonic: no loop runs past it
    faults: list[dict[str, Any]]  # the lab's fault log (as the nemesis fills it)

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")


def job_body(rng: random.Random) -> dict[str, Any]:
    """The job mix: mostly short work with a result; some flaky, failing, slow jobs."""
    draw = rng.random()
    if draw < 0.05:
        return {"type": "flaky", "payload": {"fail_times": 1}, "max_retries": 3}
    if draw < 0.08:
        return {"type": "fail", "payload": {}, "max_retries": 1}
    if draw < 0.10:
        return {"type": "slow", "payload": {}}
    return {"type": "work", "payload": {"sleep_max": 0.02}, "priority": rng.randrange(3)}


class Piece:
    name = ""
    rate = 1.0  # iterations per second of each thread (each may submit several jobs)
    threads = 1  # loops at `rate` each (several: a slow step does not starve the piece)

    def available(self) -> bool:
        return True

    def start(self, ctx: Context) -> list[threading.Thread]:
        started = []
        for i in range(self.threads):
            # one thread keeps the piece's name for its thread and its random stream
            name = self.name if self.threads == 1 else f"{self.name}:{i}"
            thread = threading.Thread(target=self._loop, args=(ctx, name), name=name, daemon=True)
            thread.start()
            started.append(thread)
        return started

    def _loop(self, ctx: Context, name: str) -> None:
        rng = ctx.rng(name)
        with httpx.Client(timeout=15.0) as client:
            next_at = time.monotonic()
            while ctx.running():
                self.step(ctx, rng, client)
                next_at += 1.0 / self.rate
                ctx.stop.wait(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at, time.monotonic() - 1.0)  # no burst after a stall

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        raise NotImplementedError

    def finish(self, ctx: Context) -> None:
        """After the workload stopped, before the drain (e.g. pause what keeps going)."""

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        """This feature's invariants (tests/faults/invariants.py) over the evidence."""
        return {}


def post_until_answered(
    ctx: Context,
    rng: random.Random,
    client: httpx.Client,
    path: str,
    body: Any,
    *,
    key: str | None = None,
    method: str = "POST",
) -> httpx.Response | None:
    """POST with retries on 429/503/connection errors (the same key each time), to
    either API; None if the run ended or the give-up time passed first."""
    give_up = min(time.monotonic() + GIVE_UP_S, ctx.deadline)
    headers = {"Idempotency-Key": key} if key else {}
    while time.monotonic() < give_up:
        url = rng.choice(ctx.urls())
        started = time.monotonic()
        try:
            response = client.request(method, url + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            _log(ctx.evidence.responses, key, None, started, type(exc).__name__)
            time.sleep(0.2)
            continue
        _log(ctx.evidence.responses, key, response, started)
        if response.status_code not in RETRYABLE:
            return response
        time.sleep(0.2)
    return None


def _expect(ctx: Context, response: httpx.Response | None, what: str, *ok: int) -> bool:
    if response is None:
        return False
    if response.status_code in ok:
        return True
    ctx.evidence.unexpected.append(f"{what}: {response.status_code} {response.text[:200]}")
    return False


class HttpSubmits(Piece):
    """POST /jobs, one job per request, with an Idempotency-Key."""

    name = "http_submits"
    rate = 12.0

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        key = f"h-{uuid.UUID(int=rng.getrandbits(128))}"
        response = post_until_answered(ctx, rng, client, "/jobs", job_body(rng), key=key)
        if _expect(ctx, response, "POST /jobs", 200, 201):
            assert response is not None
            ctx.evidence.recent.append(response.json()["job_id"])


class HttpBatches(Piece):
    """POST /jobs/batch of 25, each job with its own key."""

    name = "http_batches"
    rate = 1.0
    size = 25

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        jobs = [
            {**job_body(rng), "idempotency_key": f"b-{uuid.UUID(int=rng.getrandbits(128))}"}
            for _ in range(self.size)
        ]
        response = post_until_answered(ctx, rng, client, "/jobs/batch", {"jobs": jobs})
        if _expect(ctx, response, "POST /jobs/batch", 200, 201):
            assert response is not None
            ids = [j["job_id"] for j in response.json()["jobs"]]
            ctx.evidence.acked.extend(ids)
            ctx.evidence.recent.extend(ids[:3])


class PythonSubmits(Piece):
    """app.enqueue_many of 20 from the harness process (the store directly)."""

    name = "python_submits"
    rate = 1.0
    size = 20

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        requests = []
        for _ in range(self.size):
            body = job_body(rng)
            requests.append(
                JobRequest(
                    type=body["type"],
                    payload=body["payload"],
                    priority=body.get("priority", 0),
                    max_retries=body.get("max_retries"),
                    idempotency_key=f"p-{uuid.UUID(int=rng.getrandbits(128))}",
                )
            )
        give_up = min(time.monotonic() + GIVE_UP_S, ctx.deadline)
        while time.monotonic() < give_up:
            try:
                jobs = ctx.app.enqueue_many(requests)
            except Exception:  # an outage: the same keys again
                time.sleep(0.3)
                continue
            ids = [str(job.id) for job in jobs]
            ctx.evidence.acked.extend(ids)
            ctx.evidence.recent.extend(ids[:3])
            return


class TransactionalSubmits(Piece):
    """Jobs written in the caller's transaction (app.enqueue(connection=) and the SQL
    function vesper_enqueue); about a third of the transactions roll back."""

    name = "transactional_submits"
    rate = 4.0

    def _loop(self, ctx: Context, name: str) -> None:
        rng = ctx.rng(name)
        conn: psycopg.Connection[Any] | None = None
        while ctx.running():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(ctx.conninfo, connect_timeout=5)
                self._one(ctx, rng, conn)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                ctx.stop.wait(0.3)
            except Exception as exc:  # the store's own errors for an outage
                ctx.evidence.unexpected.append(f"transactional enqueue: {exc!r}"[:300])
                if conn is not None:
                    conn.close()
                conn = None
                ctx.stop.wait(0.3)
            ctx.stop.wait(1.0 / self.rate)
        if conn is not None:
            conn.close()

    def _one(self, ctx: Context, rng: random.Random, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1")  # the caller's own statement, before the job
        if rng.random() < 0.5:
            job_id = str(ctx.app.enqueue("work", {"sleep_max": 0.02}, connection=conn).id)
        else:
            row = conn.execute(
                "SELECT vesper_enqueue('work', %s::jsonb)", ('{"sleep_max": 0.02}',)
            ).fetchone()
            assert row is not None
            job_id = str(row[0])
        if rng.random() < 0.35:
            ctx.evidence.rolled_back.append(job_id)  # nothing commits it from here on
            conn.rollback()
            return
        conn.commit()  # if this raises, the outcome is unknown: logged as neither
        ctx.evidence.acked.append(job_id)

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        return invariants.rolled_back(ctx.evidence.rolled_back, rows, runs)


class PendingCancels(Piece):
    """A job submitted 3 s in the future, then cancelled while it waits."""

    name = "pending_cancels"
    rate = 1.0

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        key = f"c-{uuid.UUID(int=rng.getrandbits(128))}"
        body = {"type": "work", "payload": {}, "delay_seconds": 3}
        response = post_until_answered(ctx, rng, client, "/jobs", body, key=key)
        if not _expect(ctx, response, "POST /jobs (delayed)", 200, 201):
            return
        assert response is not None
        job_id = response.json()["job_id"]
        ctx.stop.wait(rng.uniform(0, 1.0))
        answer = post_until_answered(ctx, rng, client, f"/jobs/{job_id}/cancel", None)
        if answer is not None and answer.status_code == 200:
            finished = answer.json()["finished_at"]
            ctx.evidence.cancel_acks.append(
                {"job_id": job_id, "at": datetime.fromisoformat(finished)}
            )

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        return invariants.cancels(ctx.evidence.cancel_acks, rows, runs, ctx.evidence.changes)


class DlqRetries(Piece):
    """Each failing job that reached dlq is retried once (POST /jobs/{id}/retry); every
    fifth round retries them all at once instead (POST /jobs/retry, status dlq and
    type fail: a bulk retry, so some are retried more than once)."""

    name = "dlq_retries"
    rate = 0.5
    bulk_every = 5

    def __init__(self) -> None:
        self.retried: set[str] = set()
        self.rounds = 0

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        self.rounds += 1
        if self.rounds % self.bulk_every == 0:
            body = {"status": "dlq", "type": "fail"}
            answer = post_until_answered(ctx, rng, client, "/jobs/retry", body)
            if _expect(ctx, answer, "POST /jobs/retry", 200):
                assert answer is not None
                figures = ctx.evidence.figures
                figures["bulk_retries"] = figures.get("bulk_retries", 0) + 1
                figures["bulk_retried"] = figures.get("bulk_retried", 0) + answer.json()["count"]
            return
        url = rng.choice(ctx.urls())
        try:
            listed = client.get(url + "/jobs", params={"status": "dlq", "type": "fail"})
        except httpx.HTTPError:
            return
        if listed.status_code != 200:
            return
        for job in listed.json()["jobs"][:20]:
            if job["job_id"] in self.retried:
                continue
            self.retried.add(job["job_id"])
            answer = post_until_answered(ctx, rng, client, f"/jobs/{job['job_id']}/retry", None)
            # 404: pruned meanwhile; 409: another API's answer (or a bulk retry) raced it
            _expect(ctx, answer, "POST /jobs/{id}/retry", 200, 404, 409)


class Waiters(Piece):
    """GET /jobs/{id}?wait=5s and app.wait() on recently acknowledged jobs."""

    name = "waiters"
    rate = 4.0

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        if not ctx.evidence.recent:
            return
        job_id = rng.choice(list(ctx.evidence.recent))
        if rng.random() < 0.5:
            try:
                job = ctx.app.wait(job_id, timeout=5)
            except Exception:  # not finished in time, deleted, an outage
                return
            answer = {"status": job.status.value, "result": job.result}
        else:
            try:
                response = client.get(
                    rng.choice(ctx.urls()) + f"/jobs/{job_id}", params={"wait": "5s"}
                )
            except httpx.HTTPError:
                return
            if response.status_code != 200:
                return
            answer = {k: response.json()[k] for k in ("status", "result")}
        ctx.evidence.answers.append({"job_id": job_id, **answer})

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        return invariants.waiters(ctx.evidence.answers, rows)


class Schedules(Piece):
    """Issue 17: the soak app's schedule fires every second in all four workers; one job
    per tick, none missing (a tick during a database restart excused). Paused at the end
    so that the drain can finish."""

    name = "schedules"

    def available(self) -> bool:
        return hasattr(App, "periodic")

    def start(self, ctx: Context) -> list[threading.Thread]:
        return []  # the workers fire it

    def finish(self, ctx: Context) -> None:
        rng = ctx.rng(self.name)
        with httpx.Client(timeout=15.0) as client:
            answer = post_until_answered(
                ctx, rng, client, f"/schedules/{SCHEDULE}", {"paused": True}, method="PATCH"
            )
        _expect(ctx, answer, "PATCH /schedules", 200)

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        prefix = f"periodic:{SCHEDULE}:"
        ticks = sorted(
            r["idempotency_key"][len(prefix) :]
            for r in rows
            if (r.get("idempotency_key") or "").startswith(prefix)
        )
        if not ticks:
            return {"I13_no_tick_at_all": 1}
        first, last = (
            datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (ticks[0], ticks[-1])
        )
        outages = [
            (f["db_now"], f["db_now"] + timedelta(seconds=(f["mono_end"] - f["mono"]) / 1e9))
            for f in ctx.faults
            if f["kind"] == "pg_restart" and f.get("mono_end")
        ]
        counts = invariants.schedule_ticks(
            rows, SCHEDULE, period_s=1.0, first=first, last=last, outages=outages, grace_s=0.0
        )
        per_tick: dict[str, list[Row]] = {}
        for r in rows:
            if (r.get("idempotency_key") or "").startswith(prefix):
                per_tick.setdefault(r["idempotency_key"], []).append(r)
        ctx.evidence.notes.extend(
            f"{key}: "
            + ", ".join(
                f"job {r['job_id'][:8]} created {r['created_at']} finished {r.get('finished_at')}"
                f" deleted {r.get('deleted_at')}"
                for r in sorted(jobs, key=lambda r: r["created_at"])
            )
            for key, jobs in per_tick.items()
            if len(jobs) > 1
        )
        return counts


# Issue 15's fleet-wide limits, one queue each (set at the start with PATCH /queues):
# the store enforces them, I12 checks them against the ledger
LIMITED_QUEUES: dict[str, dict[str, Any]] = {
    "soak-concurrency": {"concurrency": 3},
    "soak-rate": {"rate": "3/1s"},
    "soak-keys": {"key_concurrency": 1},
}
LIMITS = {
    "soak-concurrency": invariants.QueueLimits(concurrency=3),
    "soak-rate": invariants.QueueLimits(rate=(3, 1.0)),
    "soak-keys": invariants.QueueLimits(key_concurrency=1),
}
TENANTS = tuple(f"tenant-{i}" for i in range(4))


class LimitedQueues(Piece):
    """Three queues with a limit each (served as tests/faults/soak/fleet.py says), with
    bursts the limits must hold back: every 4 s 4 jobs of 0.3-1 s for the concurrency
    (3) and 6 short ones for the rate (3/1s), every 2 s 3 jobs of 0.5-1 s over 4 tenants
    for the key concurrency (1). Each burst is more than its limit lets run or claim at
    once. A tenth are flaky (a failed attempt, then a retry in the queue).

    Sized to what limited queues are claimed at: 2-4 jobs a second each with 4 workers,
    whatever the limit (open, CHANGELOG.md), so that the backlog drains between bursts
    and the drain stays short."""

    name = "limited_queues"
    rate = 0.5

    def available(self) -> bool:
        return importlib.util.find_spec("vesper.entrypoints.http.routes.queues") is not None

    def start(self, ctx: Context) -> list[threading.Thread]:
        rng = ctx.rng(self.name + ":settings")
        with httpx.Client(timeout=15.0) as client:
            for queue, settings in LIMITED_QUEUES.items():
                answer = post_until_answered(
                    ctx, rng, client, f"/queues/{queue}", settings, method="PATCH"
                )
                if not _expect(ctx, answer, "PATCH /queues", 200):
                    ctx.evidence.notes.append(f"queue {queue} not configured: no jobs sent")
                    return []
        self.step_no = 0
        return super().start(ctx)

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        self.step_no += 1
        jobs = []
        if self.step_no % 2 == 0:
            jobs += [self._job(rng, "soak-concurrency", 0.3, 1.0) for _ in range(4)]
            jobs += [self._job(rng, "soak-rate", 0.0, 0.02) for _ in range(6)]
        jobs += [
            {**self._job(rng, "soak-keys", 0.5, 1.0), "concurrency_key": rng.choice(TENANTS)}
            for _ in range(3)
        ]
        response = post_until_answered(ctx, rng, client, "/jobs/batch", {"jobs": jobs})
        if _expect(ctx, response, "POST /jobs/batch (limited queues)", 200, 201):
            assert response is not None
            ids = [j["job_id"] for j in response.json()["jobs"]]
            ctx.evidence.acked.extend(ids)

    @staticmethod
    def _job(rng: random.Random, queue: str, low: float, high: float) -> dict[str, Any]:
        key = f"q-{uuid.UUID(int=rng.getrandbits(128))}"
        if rng.random() < 0.1:
            body: dict[str, Any] = {"type": "flaky", "payload": {"fail_times": 1}}
        else:
            body = {"type": "work", "payload": {"sleep": low, "sleep_max": high}}
        return {**body, "queue": queue, "idempotency_key": key, "max_retries": 3}

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        # a paused (SIGSTOP) process runs on past its lease: the store no longer counts
        # its job, another is claimed in its place. I3 excuses that process's runs; so
        # does I12 (docs/reliability.md, "The soak")
        paused = {f["pid"] for f in ctx.faults if f.get("overlap_ok") and f.get("pid")}
        per_queue: dict[str, int] = defaultdict(int)
        for row in rows:
            if row.get("queue") in LIMITS:
                per_queue[row["queue"]] += 1
        ctx.evidence.figures.update({f"jobs_{q}": n for q, n in sorted(per_queue.items())})
        ctx.evidence.figures.update(invariants.queue_peaks(rows, runs, LIMITS))
        return invariants.queue_limits(rows, runs, LIMITS, paused_pids=paused)


class Snoozes(Piece):
    """Jobs whose consumer snoozes once (vesper.Snooze, 0.5-2 s), then succeeds."""

    name = "snoozes"
    rate = 2.0

    def available(self) -> bool:
        return hasattr(vesper, "Snooze")

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        key = f"z-{uuid.UUID(int=rng.getrandbits(128))}"
        body = {"type": "snooze", "payload": {"snooze": round(rng.uniform(0.5, 2.0), 2)}}
        response = post_until_answered(ctx, rng, client, "/jobs", body, key=key)
        if _expect(ctx, response, "POST /jobs (snooze)", 200, 201):
            assert response is not None
            ctx.evidence.recent.append(response.json()["job_id"])

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        return invariants.snoozes(rows, runs, ctx.faults)


class RunningCancels(Piece):
    """A job that runs 0.5-4 s (a sync consumer polling job.stopping, or an async one
    sleeping), cancelled once it is seen processing, after 0-1.5 s: the cancel comes
    first or the job finishes first. Two threads, so a slow poll does not starve it."""

    name = "running_cancels"
    rate = 0.5
    threads = 2

    def available(self) -> bool:
        return hasattr(vesper.Job, "stopping")

    def step(self, ctx: Context, rng: random.Random, client: httpx.Client) -> None:
        key = f"r-{uuid.UUID(int=rng.getrandbits(128))}"
        kind = rng.choice(("stoppable", "stoppable_async"))
        body = {"type": kind, "payload": {"seconds": round(rng.uniform(0.5, 4.0), 2)}}
        response = post_until_answered(ctx, rng, client, "/jobs", body, key=key)
        if not _expect(ctx, response, "POST /jobs (stoppable)", 200, 201):
            return
        assert response is not None
        job_id = response.json()["job_id"]
        ctx.evidence.acked.append(job_id)
        status = self._await_running(ctx, rng, client, job_id)
        if status != "processing":
            return
        ctx.stop.wait(rng.uniform(0, 1.5))
        answer = post_until_answered(ctx, rng, client, f"/jobs/{job_id}/cancel", None)
        # 409: it finished first; 200: it was pending again (a fault released it)
        if not _expect(ctx, answer, "POST /jobs/{id}/cancel (running)", 200, 202, 409):
            return
        assert answer is not None
        job = answer.json()
        figures = ctx.evidence.figures
        outcome = f"running_cancel_{answer.status_code}"
        figures[outcome] = figures.get(outcome, 0) + 1
        if answer.status_code == 202:
            ctx.evidence.running_cancels.append(
                {
                    "job_id": job_id,
                    "at": datetime.fromisoformat(job["cancel_requested_at"]),
                    "claimed_at": datetime.fromisoformat(job["started_at"]),
                }
            )
        elif answer.status_code == 200:
            ctx.evidence.cancel_acks.append(
                {"job_id": job_id, "at": datetime.fromisoformat(job["finished_at"])}
            )

    def _await_running(
        self, ctx: Context, rng: random.Random, client: httpx.Client, job_id: str
    ) -> str | None:
        """The job's status once it is no longer pending (or None: 10 s, an outage)."""
        give_up = min(time.monotonic() + 10.0, ctx.deadline)
        while time.monotonic() < give_up and not ctx.stop.is_set():
            try:
                response = client.get(rng.choice(ctx.urls()) + f"/jobs/{job_id}")
            except httpx.HTTPError:
                ctx.stop.wait(0.2)
                continue
            if response.status_code == 200 and response.json()["status"] != "pending":
                status: str = response.json()["status"]
                return status
            ctx.stop.wait(0.1)
        return None

    def check(self, rows: Sequence[Row], runs: Sequence[Execution], ctx: Context) -> dict[str, int]:
        by_id = {row["job_id"]: row for row in rows}
        ended = [
            by_id[a["job_id"]]["status"]
            for a in ctx.evidence.running_cancels
            if a["job_id"] in by_id
        ]
        figures = ctx.evidence.figures
        figures["running_cancels_ended_cancelled"] = ended.count("cancelled")
        figures["running_cancels_ended_done"] = ended.count("done")
        return invariants.cancels(ctx.evidence.running_cancels, rows, runs, ctx.evidence.changes)


def pieces() -> list[Piece]:
    """Every piece of this branch's features (the run starts those available)."""
    return [
        HttpSubmits(),
        HttpBatches(),
        PythonSubmits(),
        TransactionalSubmits(),
        PendingCancels(),
        RunningCancels(),
        DlqRetries(),
        LimitedQueues(),
        Snoozes(),
        Waiters(),
        Schedules(),
    ]


def start_all(chosen: Sequence[Piece], ctx: Context) -> list[threading.Thread]:
    threads: list[threading.Thread] = []
    for piece in chosen:
        threads += piece.start(ctx)
    return threads

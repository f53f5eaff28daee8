"""The benchmark driver for vesper (PostgreSQL or SQLite, by the URL); see common.py.

The worker is the real `vesper worker` process (started by the harness); this driver
only submits, through the library API (`App.enqueue`, `App.enqueue_many`).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.drivers.common import JOB_TYPE, chunks, emit, paced, parse, shares
from vesper.application.execution import lease_of
from vesper.application.policies import Policies
from vesper.application.submit import new_job_id
from vesper.domain.queues import DEFAULT_QUEUE, QueueChange
from vesper.domain.submission import JobRequest, Limits, prepare
from vesper.entrypoints.app import App


def app_for(url: str) -> App:
    storage = "postgres" if url.startswith("postgresql") else "sqlite"
    return App({"VESPER_STORAGE": storage, "VESPER_DATABASE_URL": url})


def claim_latency(app: App, jobs: int, limit: int) -> list[float]:
    """Queue `jobs` jobs, then claim them `limit` at a time through the store (the call
    `vesper worker` makes per batch), completing each batch untimed; each claim's ms."""
    store = app.container.store()
    settings = Policies()
    store.jobs.submit(
        [
            prepare(
                JobRequest(type=JOB_TYPE, payload={"n": n}),
                job_id=new_job_id(),
                limits=Limits(max_batch=jobs),
                default_max_retries=3,
            )
            for n in range(jobs)
        ]
    )
    claims: list[float] = []
    deadline = time.monotonic() + 120  # bounded even when the store stalls
    for _ in range(jobs // limit + 2):
        started = time.perf_counter()
        claimed = store.jobs.claim(worker_id="bench-claimer", limit=limit, lease=settings.lease)
        elapsed = time.perf_counter() - started
        if not claimed or time.monotonic() > deadline:
            break
        claims.append(elapsed * 1000)
        store.jobs.complete([lease_of(job) for job in claimed])
    return claims[1:]  # the first claim prepares the statement: not a steady-state one


def concurrent(app: App, jobs: int, producers: int) -> float:
    """`jobs` calls of `app.enqueue` from `producers` threads (W1c); the seconds taken."""
    app.enqueue(JOB_TYPE, {"n": -1})  # connect before the clock starts
    errors: list[BaseException] = []

    def produce(share: range) -> None:
        try:
            for n in share:
                app.enqueue(JOB_TYPE, {"n": n})
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(s,)) for s in shares(jobs, producers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    seconds = time.perf_counter() - started
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"W1c: a producer failed or hung: {errors[:1]}")
    return seconds


FLOW_TICK_S = 0.02


def flow(app: App, rate: float, seconds: float) -> int:
    """Queue `rate` jobs a second for `seconds`, a batch every FLOW_TICK_S (W6s); a tick
    that falls behind is made up by the next ones (bounded: seconds + 30)."""
    submitted = 0
    started = time.monotonic()
    deadline = started + seconds + 30
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds or time.monotonic() > deadline:
            return submitted
        due = min(int(rate * elapsed) - submitted, 1000)  # the batch limit
        if due > 0:
            app.enqueue_many(
                [JobRequest(type=JOB_TYPE, payload={"n": submitted + i}) for i in range(due)]
            )
            submitted += due
        time.sleep(FLOW_TICK_S)


def main() -> None:
    args = parse()
    app = app_for(args.url)
    try:
        app.container.store()  # connect (and migrate) before any clock starts
        if args.command == "setup":
            emit({})
        elif args.command == "enqueue-single":
            started = time.perf_counter()
            for n in range(args.jobs):
                app.enqueue(JOB_TYPE, {"n": n})
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-batch":
            started = time.perf_counter()
            for part in chunks(args.jobs, args.chunk):
                app.enqueue_many([JobRequest(type=JOB_TYPE, payload={"n": n}) for n in part])
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-concurrent":
            emit({"seconds": concurrent(app, args.jobs, args.producers)})
        elif args.command == "fill":
            # one transaction, past the API's batch limit: the jobs appear all at once
            limits = Limits(max_batch=args.jobs)
            batch = [
                prepare(
                    JobRequest(type=JOB_TYPE, payload={"n": n}),
                    job_id=new_job_id(),
                    limits=limits,
                    default_max_retries=3,
                )
                for n in range(args.jobs)
            ]
            app.container.store().jobs.submit(batch)
            emit({"committed_at": time.time()})
        elif args.command == "queue-default":
            # the default queue's settings row: a concurrency limit (--limit > 0), or
            # none (a row that limits nothing: the claim's fast path)
            change = QueueChange(concurrency=args.limit if args.limit > 0 else None)
            app.container.configure_queue()(DEFAULT_QUEUE, change)
            emit({})
        elif args.command == "claim-latency":
            emit({"claims_ms": claim_latency(app, args.jobs, args.limit)})
        elif args.command == "flow":
            emit({"submitted": flow(app, args.rate, args.seconds)})
        elif args.command == "produce":
            app.enqueue(JOB_TYPE, {"n": -1})  # warm the pool: the first call connects
            emit(
                {"enqueued": paced(args.jobs, args.rate, lambda n: app.enqueue(JOB_TYPE, {"n": n}))}
            )
        else:
            raise SystemExit(f"unknown command {args.command!r}")
    finally:
        app.close()


if __name__ == "__main__":
    main()

"""The benchmark driver for pgqueuer 1.6 (run by the peers' venv); see common.py.

Two configurations, by $PGQ_BENCH_DRIVER: `asyncpg` (the default of `pgq run` and of
pgqueuer's README: one asyncpg connection, `Queries.from_asyncpg_connection`; W1c
shares an asyncpg pool among its producers, as pgqueuer's tuning guide advises for
producers) and `psycopg` (`PsycopgDriver` on autocommit connections; W1c gives each
producer its own). The worker is `pgqueuer.run(pgqueuer_app.main)`: the function `pgq
run` calls, with `pgq run`'s defaults (batch_size 10, no cap on concurrent tasks,
dequeue_timeout 30 s, heartbeat_timeout 30 s, continuous mode; see pgqueuer_app.py). The
`pgq` script itself is not used: pgqueuer 1.6.0's CLI stops at start with the typer the
peers' venv resolves (`AttributeError: 'str' object has no attribute 'name'`, in its
log-level option).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from common import JOB_TYPE, apaced, chunks, emit, parse, shares

args = parse()
ASYNCPG = os.environ.get("PGQ_BENCH_DRIVER", "asyncpg") == "asyncpg"
TABLES = "pgqueuer, pgqueuer_log, pgqueuer_statistics"


async def connect() -> Any:
    if ASYNCPG:
        import asyncpg  # noqa: PLC0415

        return await asyncpg.connect(args.url)
    import psycopg  # noqa: PLC0415

    return await psycopg.AsyncConnection.connect(args.url, autocommit=True)


def queries_on(connection: Any) -> Any:
    from pgqueuer import Queries  # noqa: PLC0415

    if ASYNCPG:
        return Queries.from_asyncpg_connection(connection)
    return Queries.from_psycopg_connection(connection)


async def concurrent(jobs: int, producers: int) -> float:
    """`jobs` single enqueues by `producers` concurrent tasks; the seconds they took."""
    from pgqueuer import Queries  # noqa: PLC0415

    closers: list[Any] = []
    if ASYNCPG:
        import asyncpg  # noqa: PLC0415

        pool = await asyncpg.create_pool(args.url, min_size=producers, max_size=producers)
        closers.append(pool)
        queries = [Queries.from_asyncpg_pool(pool)] * producers
    else:
        connections = [await connect() for _ in range(producers)]
        closers += connections
        queries = [queries_on(c) for c in connections]

    async def produce(q: Any, share: range) -> None:
        for n in share:
            await q.enqueue(JOB_TYPE, str(n).encode())

    try:
        started = time.perf_counter()
        await asyncio.gather(
            *(produce(q, s) for q, s in zip(queries, shares(jobs, producers), strict=True))
        )
        return time.perf_counter() - started
    finally:
        for closer in closers:
            await closer.close()


async def run_worker() -> None:
    """What `pgq run pgqueuer_app:main` runs, at its defaults, until SIGTERM."""
    import pgqueuer  # noqa: PLC0415

    os.environ.update(
        PGQ_BENCH_URL=args.url, PGQ_BENCH_READY=args.ready or "", PGQ_BENCH_LEDGER=args.ledger or ""
    )
    import pgqueuer_app  # noqa: PLC0415

    # `pgq run --batch-size` (default 10); the tuning guide's advice for short jobs
    await pgqueuer.run(pgqueuer_app.main, batch_size=int(os.environ.get("PGQ_BENCH_BATCH", "10")))


async def main() -> None:
    if args.command == "worker":
        await run_worker()
        return
    conn = await connect()
    try:
        queries = queries_on(conn)
        if args.command == "setup":
            if not await queries.schema_is_installed():
                await queries.install()
            emit({})
        elif args.command == "reset":
            await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
            emit({})
        elif args.command == "enqueue-single":
            started = time.perf_counter()
            for n in range(args.jobs):
                await queries.enqueue(JOB_TYPE, str(n).encode())
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-batch":
            started = time.perf_counter()
            for part in chunks(args.jobs, args.chunk):
                await queries.enqueue(
                    [JOB_TYPE] * len(part), [str(n).encode() for n in part], [0] * len(part)
                )
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-concurrent":
            emit({"seconds": await concurrent(args.jobs, args.producers)})
        elif args.command == "fill":
            n = args.jobs
            await queries.enqueue([JOB_TYPE] * n, [str(i).encode() for i in range(n)], [0] * n)
            emit({"committed_at": time.time()})
        elif args.command == "produce":
            await queries.enqueue(JOB_TYPE, b"-1")

            async def one(n: int) -> None:
                await queries.enqueue(JOB_TYPE, str(n).encode())

            emit({"enqueued": await apaced(args.jobs, args.rate, one)})
        else:
            raise SystemExit(f"unknown command {args.command!r}")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

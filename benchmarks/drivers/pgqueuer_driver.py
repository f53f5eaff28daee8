"""The benchmark driver for pgqueuer 1.6 (run by the peers' venv); see common.py.

Documented defaults: PsycopgDriver on an autocommit connection, `PgQueuer.run()` with
its default batch_size (10) and no cap on concurrent tasks; one entrypoint.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import psycopg
from common import JOB_TYPE, Ledger, apaced, chunks, emit, parse, touch
from pgqueuer import PgQueuer, Queries
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job

args = parse()
ledger = Ledger(args.ledger)


async def main() -> None:
    conn = await psycopg.AsyncConnection.connect(args.url, autocommit=True)
    try:
        driver = PsycopgDriver(conn)
        queries = Queries(driver)
        if args.command == "setup":
            if not await queries.schema_is_installed():
                await queries.install()
            emit({})
        elif args.command == "reset":
            await conn.execute(
                "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY"
            )
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
        elif args.command == "fill":
            n = args.jobs
            await queries.enqueue([JOB_TYPE] * n, [str(i).encode() for i in range(n)], [0] * n)
            emit({"committed_at": time.time()})
        elif args.command == "produce":
            await queries.enqueue(JOB_TYPE, b"-1")

            async def one(n: int) -> None:
                await queries.enqueue(JOB_TYPE, str(n).encode())

            emit({"enqueued": await apaced(args.jobs, args.rate, one)})
        elif args.command == "worker":
            pgq = PgQueuer(driver)

            @pgq.entrypoint(JOB_TYPE)
            async def bench(job: Job) -> None:
                ledger.start(job.payload.decode() if job.payload else None)

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, pgq.shutdown.set)
            touch(args.ready)
            await pgq.run()
        else:
            raise SystemExit(f"unknown command {args.command!r}")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

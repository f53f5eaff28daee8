"""The benchmark driver for procrastinate 3.10 (run by the peers' venv); see common.py.

Documented defaults (PsycopgConnector, LISTEN/NOTIFY on, the default queue) plus the
benchmark's concurrency. Async API throughout, as its documentation recommends.
"""

from __future__ import annotations

import asyncio
import sys
import time

import procrastinate
from common import JOB_TYPE, Ledger, apaced, chunks, emit, parse, shares, touch

args = parse()
ledger = Ledger(args.ledger)
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=args.url))


@app.task(name=JOB_TYPE)
async def bench(n: int) -> None:
    ledger.start(n)


async def main() -> None:
    async with app.open_async():
        if args.command == "setup":
            exists = await app.connector.execute_query_one_async(
                "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS e"
            )
            if not exists["e"]:
                await app.schema_manager.apply_schema_async()
            emit({})
        elif args.command == "reset":
            await app.connector.execute_query_async(
                "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers "
                "RESTART IDENTITY CASCADE"
            )
            emit({})
        elif args.command == "enqueue-single":
            started = time.perf_counter()
            for n in range(args.jobs):
                await bench.defer_async(n=n)
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-batch":
            started = time.perf_counter()
            for part in chunks(args.jobs, args.chunk):
                await bench.batch_defer_async(*({"n": n} for n in part))
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "enqueue-concurrent":

            async def produce(share: range) -> None:
                for n in share:
                    await bench.defer_async(n=n)

            started = time.perf_counter()
            await asyncio.gather(*(produce(s) for s in shares(args.jobs, args.producers)))
            emit({"seconds": time.perf_counter() - started})
        elif args.command == "fill":
            await bench.batch_defer_async(*({"n": n} for n in range(args.jobs)))
            emit({"committed_at": time.time()})
        elif args.command == "produce":
            await bench.defer_async(n=-1)
            emit({"enqueued": await apaced(args.jobs, args.rate, lambda n: bench.defer_async(n=n))})
        elif args.command == "worker":
            touch(args.ready)
            await app.run_worker_async(concurrency=args.concurrency, wait=True)
        else:
            raise SystemExit(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

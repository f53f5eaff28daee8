"""The pgqueuer worker the benchmark runs with `pgq run pgqueuer_app:main` (pgqueuer's
own CLI, at its defaults): a no-op entrypoint that notes its start time in the ledger.

The factory is pgqueuer's quickstart, on the driver named by $PGQ_BENCH_DRIVER: asyncpg
(`PgQueuer.from_asyncpg_connection`, what `pgq run` and the README use) or psycopg
(`PgQueuer.from_psycopg_connection` on an autocommit connection).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common import JOB_TYPE, Ledger, touch
from pgqueuer import PgQueuer
from pgqueuer.models import Job


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    url = os.environ["PGQ_BENCH_URL"]
    ledger = Ledger(os.environ.get("PGQ_BENCH_LEDGER") or None)
    if os.environ.get("PGQ_BENCH_DRIVER", "asyncpg") == "asyncpg":
        import asyncpg  # noqa: PLC0415

        connection = await asyncpg.connect(url)
        pgq = PgQueuer.from_asyncpg_connection(connection)
    else:
        import psycopg  # noqa: PLC0415

        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        pgq = PgQueuer.from_psycopg_connection(connection)

    @pgq.entrypoint(JOB_TYPE)
    async def bench(job: Job) -> None:
        ledger.start(job.payload.decode() if job.payload else None)

    touch(os.environ.get("PGQ_BENCH_READY") or None)
    try:
        yield pgq
    finally:
        await connection.close()

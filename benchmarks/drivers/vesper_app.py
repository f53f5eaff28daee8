"""The vesper app the benchmark's workers run: a no-op async consumer that notes its start
time in the ledger named by $VESPER_BENCH_LEDGER (when set)."""

from __future__ import annotations

import os

import vesper
from benchmarks.drivers.common import JOB_TYPE, Ledger

app = vesper.App()
_ledger = Ledger(os.environ.get("VESPER_BENCH_LEDGER") or None)


@app.consumer(JOB_TYPE)
async def bench(job: vesper.Job) -> None:
    _ledger.start(job.payload.get("n"))

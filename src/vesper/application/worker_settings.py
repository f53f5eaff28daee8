"""How a process's workers run: slots, polling, shutdown grace, time limits (WORKERS,
VESPER_POLL_INTERVAL, VESPER_SHUTDOWN_GRACE, VESPER_JOB_TIMEOUT, VESPER_PRUNE_INTERVAL,
VESPER_QUEUES)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import attrs


@attrs.frozen(kw_only=True)
class WorkerSettings:
    concurrency: int = 5  # job slots: consumers running at once (the queues' sum if set)
    # VESPER_QUEUES: the slots of each queue served; None: one pool serving every queue
    queues: Mapping[str, int] | None = attrs.field(default=None, hash=False)
    poll_interval: timedelta = timedelta(seconds=1)  # claim this often when nothing wakes it
    shutdown_grace: timedelta = timedelta(seconds=30)  # running jobs may finish this long
    job_timeout: timedelta | None = None  # an attempt's time limit, unless its type has one
    fleet_log_interval: timedelta = timedelta(seconds=60)  # the summary lines' period
    prune_interval: timedelta = timedelta(minutes=1)  # retention's rounds

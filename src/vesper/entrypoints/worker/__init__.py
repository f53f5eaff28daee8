"""The worker runtime: claims jobs, runs consumers in concurrent slots, records outcomes."""

from __future__ import annotations

from vesper.entrypoints.worker.lanes import ExecutorLane, Lane, open_executor_lane
from vesper.entrypoints.worker.runner import WorkerRunner, WorkerSettings
from vesper.entrypoints.worker.uses import WorkerUseCases

__all__ = [
    "ExecutorLane",
    "Lane",
    "WorkerRunner",
    "WorkerSettings",
    "WorkerUseCases",
    "open_executor_lane",
]

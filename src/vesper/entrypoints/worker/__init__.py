"""The worker runtime: claims jobs, runs consumers in concurrent slots, records outcomes."""

from __future__ import annotations

from vesper.entrypoints.worker.lanes import Lane
from vesper.entrypoints.worker.runner import WorkerRunner
from vesper.entrypoints.worker.uses import WorkerUseCases

__all__ = [
    "Lane",
    "WorkerRunner",
    "WorkerUseCases",
]

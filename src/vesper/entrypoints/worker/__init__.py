"""The worker runtime: claims jobs, runs consumers in concurrent slots, records outcomes."""

from __future__ import annotations

from vesper.entrypoints.worker.runner import WorkerRunner, WorkerSettings, WorkerUseCases

__all__ = ["WorkerRunner", "WorkerSettings", "WorkerUseCases"]

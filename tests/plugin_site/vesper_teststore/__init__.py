"""A third-party storage adapter, as a user would ship one: named in-process databases.

`teststore://<name>` opens the database called <name>; every handle on one name in a
process shares its jobs and workers (like connections to one database). It is
registered under the entry-point group `vesper.storage` by the dist-info beside it, so
`VESPER_STORAGE=teststore` selects it with no change to vesper. With
`?migrate_marker=<file>` in the URL the store has a `migrate()` hook (which writes the
URL to that file), for `vesper migrate` to call.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from vesper.adapters.memory import InMemoryJobRepository, InMemoryWorkerRegistry
from vesper.application.ports import Clock, JobRepository, WorkerRegistry

_lock = threading.Lock()
_databases: dict[str, tuple[InMemoryJobRepository, InMemoryWorkerRegistry]] = {}
opened: list[str] = []  # which URLs were opened, so a test can see this adapter ran


class NamedStore:
    def __init__(self, jobs: JobRepository, workers: WorkerRegistry) -> None:
        self._jobs = jobs
        self._workers = workers

    @property
    def jobs(self) -> JobRepository:
        return self._jobs

    @property
    def workers(self) -> WorkerRegistry:
        return self._workers

    def close(self) -> None:
        """Handles hold nothing; the named database lives as long as the process."""


class MigratingStore(NamedStore):
    def __init__(self, jobs: JobRepository, workers: WorkerRegistry, marker: Path) -> None:
        super().__init__(jobs, workers)
        self.marker = marker
        self.url = ""

    def migrate(self) -> None:
        self.marker.write_text(self.url)


def open_store(url: str, clock: Clock) -> NamedStore:
    parts = urlsplit(url)
    name = parts.netloc or "default"
    marker = parse_qs(parts.query).get("migrate_marker")
    with _lock:
        if name not in _databases:
            _databases[name] = (InMemoryJobRepository(clock), InMemoryWorkerRegistry(clock))
        jobs, workers = _databases[name]
        opened.append(url)
    if marker:
        store = MigratingStore(jobs, workers, Path(marker[0]))
        store.url = url
        return store
    return NamedStore(jobs, workers)

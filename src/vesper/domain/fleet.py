"""Worker processes and the fleet they make together."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs


@attrs.frozen(kw_only=True)
class WorkerProcess:
    """One running worker process, as it registered itself."""

    id: str
    machine: str
    pid: int
    concurrency: int  # job slots in this process
    started_at: datetime
    last_heartbeat: datetime


@attrs.frozen(kw_only=True)
class MachineSummary:
    machine: str
    processes: int
    workers: int  # sum of the processes' concurrency


@attrs.frozen(kw_only=True)
class Fleet:
    """The live processes, grouped by machine."""

    processes: tuple[WorkerProcess, ...]

    @classmethod
    def of(cls, processes: Iterable[WorkerProcess]) -> Fleet:
        return cls(
            processes=tuple(sorted(processes, key=lambda p: (p.machine, p.started_at, p.id)))
        )

    @property
    def total_workers(self) -> int:
        return sum(p.concurrency for p in self.processes)

    @property
    def machines(self) -> tuple[MachineSummary, ...]:
        grouped: dict[str, list[WorkerProcess]] = {}
        for process in self.processes:
            grouped.setdefault(process.machine, []).append(process)
        return tuple(
            MachineSummary(
                machine=machine,
                processes=len(members),
                workers=sum(p.concurrency for p in members),
            )
            for machine, members in sorted(grouped.items())
        )

"""Worker processes and the fleet they make together."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    # the slots of each queue it serves; None: one pool of `concurrency` slots for every queue
    queues: Mapping[str, int] | None = attrs.field(default=None, hash=False)
    types: tuple[str, ...] | None = None  # the job types it claims; None: every type

    def serves(self, queue: str, job_type: str) -> bool:
        """Whether this process claims jobs of `job_type` in `queue`."""
        return (self.queues is None or queue in self.queues) and (
            self.types is None or job_type in self.types
        )


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

"""The fleet: processes grouped by machine; total workers is the sum of concurrency."""

from __future__ import annotations

from datetime import timedelta

from vesper.domain.fleet import Fleet, MachineSummary, WorkerProcess

from .builders import T0


def process(worker_id: str, machine: str, concurrency: int, started: int = 0) -> WorkerProcess:
    at = T0 + timedelta(seconds=started)
    return WorkerProcess(
        id=worker_id,
        machine=machine,
        pid=1000 + len(worker_id),
        concurrency=concurrency,
        started_at=at,
        last_heartbeat=at,
    )


def test_empty_fleet() -> None:
    fleet = Fleet.of([])
    assert fleet.total_workers == 0
    assert fleet.machines == ()
    assert fleet.processes == ()


def test_total_workers_sums_concurrency_and_machines_group_processes() -> None:
    fleet = Fleet.of(
        [
            process("b-2", "beta", 4, started=2),
            process("a-1", "alpha", 5),
            process("b-1", "beta", 3, started=1),
            process("a-2", "alpha", 1, started=5),
            process("g-1", "gamma", 8),
        ]
    )
    assert fleet.total_workers == 21
    assert fleet.machines == (
        MachineSummary(machine="alpha", processes=2, workers=6),
        MachineSummary(machine="beta", processes=2, workers=7),
        MachineSummary(machine="gamma", processes=1, workers=8),
    )
    assert [p.id for p in fleet.processes] == ["a-1", "a-2", "b-1", "b-2", "g-1"]


def test_processes_on_one_machine_are_ordered_by_start_then_id() -> None:
    fleet = Fleet.of([process("z", "m", 1, started=0), process("a", "m", 1, started=0)])
    assert [p.id for p in fleet.processes] == ["a", "z"]
    assert fleet.machines == (MachineSummary(machine="m", processes=2, workers=2),)

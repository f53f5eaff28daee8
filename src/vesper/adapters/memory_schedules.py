"""The in-memory schedule registry: the reference behaviour of the ScheduleRegistry port."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

import attrs

from vesper.adapters.clock import SystemClock
from vesper.application.ports import Clock
from vesper.domain.errors import ScheduleNotFound
from vesper.domain.job import JobId
from vesper.domain.periodic import Schedule, ScheduleRecord


class InMemoryScheduleRegistry:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._records: dict[str, ScheduleRecord] = {}

    def declare(self, schedules: Sequence[Schedule], *, now: datetime | None = None) -> None:
        at = now or self._clock.now()
        with self._lock:
            for schedule in schedules:
                known = self._records.get(schedule.name)
                if known is None:
                    self._records[schedule.name] = ScheduleRecord(
                        schedule=schedule, last_declared_at=at
                    )
                else:
                    self._records[schedule.name] = attrs.evolve(
                        known, schedule=schedule, last_declared_at=at
                    )

    def record_tick(
        self, name: str, tick: datetime, job_id: JobId, *, now: datetime | None = None
    ) -> bool:
        with self._lock:
            known = self._records.get(name)
            if known is None or (known.last_tick is not None and known.last_tick >= tick):
                return False
            self._records[name] = attrs.evolve(known, last_tick=tick, last_job_id=job_id)
            return True

    def set_paused(self, name: str, paused: bool) -> ScheduleRecord:
        with self._lock:
            known = self._records.get(name)
            if known is None:
                raise ScheduleNotFound(name)
            changed = attrs.evolve(known, paused=paused)
            self._records[name] = changed
            return changed

    def list(self) -> list[ScheduleRecord]:
        with self._lock:
            return [self._records[name] for name in sorted(self._records)]

    def delete(self, name: str) -> None:
        with self._lock:
            if self._records.pop(name, None) is None:
                raise ScheduleNotFound(name)

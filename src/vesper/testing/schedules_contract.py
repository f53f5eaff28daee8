"""ScheduleRegistry: schedules declared by processes, their last tick, paused, deleted.

Optional: a store without `schedules` (see `vesper.application.ports.store_schedules`)
skips these tests.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from vesper.application.ports import ScheduleRegistry, Store, store_schedules
from vesper.domain.errors import ScheduleNotFound
from vesper.domain.job import JobId
from vesper.domain.periodic import Schedule, ScheduleRecord
from vesper.testing.fixtures import T0, StoreFixtures, StoreOpener, at

RACERS = 4


def schedule(name: str = "report", **changes: object) -> Schedule:
    fields: dict[str, object] = {
        "name": name,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "type": "report",
        "payload": {"ünïcode": ["x", 1, None, {"deep": True}]},
        "priority": 7,
        "queue": "reports",
        **changes,
    }
    return Schedule(**fields)  # type: ignore[arg-type]


def new_id() -> JobId:
    return JobId(uuid.uuid4())


def by_name(registry: ScheduleRegistry) -> dict[str, ScheduleRecord]:
    return {record.name: record for record in registry.list()}


def record_ticks(opener: StoreOpener, ticks: list[int], start: threading.Barrier) -> int:
    with opener() as store:
        registry = store_schedules(store)
        assert registry is not None
        start.wait(timeout=30)
        return sum(registry.record_tick("report", at(t), new_id(), now=at(t)) for t in ticks)


class ScheduleRegistryContract(StoreFixtures):
    @pytest.fixture
    def schedules(self, store: Store) -> ScheduleRegistry:
        registry = store_schedules(store)
        if registry is None:
            pytest.skip("the store keeps no schedules (optional)")
        return registry

    # -- declare ----------------------------------------------------------------------

    def test_empty_registry_lists_nothing(self, schedules: ScheduleRegistry) -> None:
        assert schedules.list() == []

    def test_declare_round_trips_schedule_exactly(self, schedules: ScheduleRegistry) -> None:
        declared = schedule()
        schedules.declare([declared], now=at(0.000001))
        assert schedules.list() == [
            ScheduleRecord(
                schedule=declared,
                paused=False,
                last_tick=None,
                last_job_id=None,
                last_declared_at=at(0.000001),
            )
        ]
        [stored] = schedules.list()
        assert stored.last_declared_at.utcoffset() == timedelta(0)

    def test_list_is_by_name(self, schedules: ScheduleRegistry) -> None:
        schedules.declare([schedule("b"), schedule("c"), schedule("a")], now=T0)
        assert [r.name for r in schedules.list()] == ["a", "b", "c"]

    def test_declare_again_replaces_definition_and_keeps_state(
        self, schedules: ScheduleRegistry
    ) -> None:
        schedules.declare([schedule()], now=T0)
        job = new_id()
        assert schedules.record_tick("report", at(60), job, now=at(61)) is True
        schedules.set_paused("report", True)
        changed = schedule(cron="0 * * * * *", timezone="UTC", payload={}, priority=0, queue=None)
        schedules.declare([changed], now=at(120))
        [stored] = schedules.list()
        assert stored == ScheduleRecord(
            schedule=changed,
            paused=True,
            last_tick=at(60),
            last_job_id=job,
            last_declared_at=at(120),
        )

    def test_declare_without_now_uses_store_clock(self, store: Store) -> None:
        registry = store_schedules(store)
        if registry is None:
            pytest.skip("the store keeps no schedules (optional)")
        before = store.jobs.now()
        registry.declare([schedule()])
        after = store.jobs.now()
        [stored] = registry.list()
        assert before <= stored.last_declared_at <= after

    def test_declare_nothing_changes_nothing(self, schedules: ScheduleRegistry) -> None:
        schedules.declare([schedule()], now=T0)
        schedules.declare([], now=at(5))
        assert [r.last_declared_at for r in schedules.list()] == [T0]

    def test_declaration_of_others_leaves_schedule_as_declared(
        self, schedules: ScheduleRegistry
    ) -> None:
        schedules.declare([schedule("old"), schedule("kept")], now=T0)
        schedules.declare([schedule("kept")], now=at(100))
        stored = by_name(schedules)
        assert stored["old"].last_declared_at == T0  # stale, still listed
        assert stored["kept"].last_declared_at == at(100)

    # -- record_tick ------------------------------------------------------------------

    def test_record_tick_moves_only_forward(self, schedules: ScheduleRegistry) -> None:
        schedules.declare([schedule()], now=T0)
        first, second = new_id(), new_id()
        assert schedules.record_tick("report", at(10), first, now=at(10)) is True
        assert schedules.record_tick("report", at(10), second, now=at(11)) is False
        assert schedules.record_tick("report", at(5), second, now=at(12)) is False
        [stored] = schedules.list()
        assert (stored.last_tick, stored.last_job_id) == (at(10), first)
        assert schedules.record_tick("report", at(10.5), second, now=at(13)) is True
        [stored] = schedules.list()
        assert (stored.last_tick, stored.last_job_id) == (at(10.5), second)

    def test_record_tick_of_unknown_schedule_is_false(self, schedules: ScheduleRegistry) -> None:
        assert schedules.record_tick("nobody", T0, new_id(), now=T0) is False
        assert schedules.list() == []

    def test_concurrent_record_ticks_keep_the_latest(
        self, store_opener: StoreOpener, schedules: ScheduleRegistry
    ) -> None:
        schedules.declare([schedule()], now=T0)
        start = threading.Barrier(RACERS)
        # every racer records the same ticks in its own order: each tick moves last_tick
        # at most once, and it never moves backwards
        orders = [list(range(i, 40, 1)) + list(range(0, i)) for i in range(RACERS)]
        with ThreadPoolExecutor(RACERS) as pool:
            moved = sum(pool.map(lambda o: record_ticks(store_opener, o, start), orders))
        [stored] = schedules.list()
        assert stored.last_tick == at(39)
        assert 1 <= moved <= 40

    # -- set_paused -------------------------------------------------------------------

    def test_set_paused_and_resume(self, schedules: ScheduleRegistry) -> None:
        schedules.declare([schedule(), schedule("other")], now=T0)
        paused = schedules.set_paused("report", True)
        assert paused.paused is True
        assert paused == by_name(schedules)["report"]
        assert by_name(schedules)["other"].paused is False
        assert schedules.set_paused("report", False).paused is False
        assert by_name(schedules)["report"].paused is False

    def test_set_paused_unknown_raises(self, schedules: ScheduleRegistry) -> None:
        with pytest.raises(ScheduleNotFound):
            schedules.set_paused("nobody", True)

    # -- delete -----------------------------------------------------------------------

    def test_delete_forgets_schedule_and_state(self, schedules: ScheduleRegistry) -> None:
        schedules.declare([schedule(), schedule("other")], now=T0)
        schedules.record_tick("report", at(60), new_id(), now=at(60))
        schedules.set_paused("report", True)
        schedules.delete("report")
        assert [r.name for r in schedules.list()] == ["other"]
        schedules.declare([schedule()], now=at(100))  # declared again: a new schedule
        assert by_name(schedules)["report"] == ScheduleRecord(
            schedule=schedule(), last_declared_at=at(100)
        )

    def test_delete_unknown_raises(self, schedules: ScheduleRegistry) -> None:
        with pytest.raises(ScheduleNotFound):
            schedules.delete("nobody")

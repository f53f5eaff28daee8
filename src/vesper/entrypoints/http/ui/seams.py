"""Seams: the dashboard's parts whose use cases arrive with later features.

Each seam is one function that the routes already call and the templates already render;
until its feature lands it reports itself unavailable, and the page says so (no action
is offered). Filling a seam means: the container gains the provider named below, and
the function turns that use case's result into the view model it returns.

- `queue_counts` (overview, active jobs by queue: the summary's where the store counts
  them, else from ListQueues) and `queues_page`, `set_queue_paused`,
  `set_queue_limits` (the queues page): job queues and their settings, filled: they
  call ListQueues and ConfigureQueue; a store without named queues shows its one queue,
  "default", and refuses changes with one line.

`schedules_page` and `set_schedule_paused` (the schedules page) are filled: they call
ListSchedules and PauseSchedule; a store that keeps no schedules shows the page as
unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vesper.application.queues import QueueView
from vesper.domain.errors import InvalidRequest, SchedulesUnsupported
from vesper.domain.queues import UNSET, QueueChange, QueueSettings
from vesper.domain.stats import ActiveJobs, QueueSummary
from vesper.entrypoints.http.ui.views import when
from vesper.entrypoints.wire import queue_to_wire

# the container providers each seam will call, once the features add them
QUEUES_PROVIDER = "list_queues"
QUEUE_UPDATE_PROVIDER = "configure_queue"
SCHEDULES_PROVIDER = "list_schedules"
SCHEDULE_UPDATE_PROVIDER = "pause_schedule"


class FeatureUnavailable(Exception):
    """An action whose feature this server does not have yet (the UI answers 404)."""

    def __init__(self, feature: str) -> None:
        super().__init__(f"{feature} are not available on this server")
        self.feature = feature


@attrs.frozen(kw_only=True)
class QueueRow:
    name: str
    paused: bool
    counts: Mapping[str, int]  # by status
    limits: Mapping[str, str]  # setting -> value, as shown and edited


@attrs.frozen(kw_only=True)
class QueuesPage:
    available: bool
    queues: tuple[QueueRow, ...] = ()


@attrs.frozen(kw_only=True)
class ScheduleRow:
    name: str
    paused: bool
    next_tick: str
    last_tick: str
    job_type: str


@attrs.frozen(kw_only=True)
class SchedulesPage:
    available: bool
    schedules: tuple[ScheduleRow, ...] = ()


def _provider(container: Any, name: str) -> Any | None:
    return getattr(container, name, None)


# the limits the queues page edits, in the order it shows them ("" in a field: none)
LIMITS = ("concurrency", "rate", "key_concurrency", "aging")
_COUNTED = ("concurrency", "key_concurrency")


def _queues(container: Any) -> list[QueueView] | None:
    provider = _provider(container, QUEUES_PROVIDER)
    return None if provider is None else list(provider()())


def queue_counts(container: Any, summary: QueueSummary) -> Mapping[str, ActiveJobs] | None:
    """Active jobs by queue for the overview: the summary's, counted at a cost that the
    finished jobs do not change. A store that does not count them in its summary leaves
    them None: then ListQueues', which counts every job (its cost grows with the table),
    with the summary's cap, so that the page reads alike. None while jobs have no queues."""
    if summary.active_by_queue is not None:
        return summary.active_by_queue
    views = _queues(container)
    if views is None:
        return None
    active = {view.state.name: ActiveJobs.of(view.state.counts, summary.cap) for view in views}
    # as the summary's: queues with finished jobs only are left out, those with settings kept
    return {
        view.state.name: active[view.state.name]
        for view in views
        if active[view.state.name] != ActiveJobs()
        or view.state.settings != QueueSettings(name=view.state.name)
    }


def queues_page(container: Any) -> QueuesPage:
    views = _queues(container)
    if views is None:
        return QueuesPage(available=False)
    rows = []
    for view in views:
        wire = queue_to_wire(view)
        rows.append(
            QueueRow(
                name=view.state.name,
                paused=view.state.settings.paused,
                counts=wire["by_status"],
                limits={k: "" if wire[k] is None else str(wire[k]) for k in LIMITS},
            )
        )
    return QueuesPage(available=True, queues=tuple(rows))


def _configure(container: Any, name: str, change: QueueChange) -> None:
    provider = _provider(container, QUEUE_UPDATE_PROVIDER)
    if provider is None:
        raise FeatureUnavailable("queues")
    provider()(name, change)


def set_queue_paused(container: Any, name: str, paused: bool) -> None:
    _configure(container, name, QueueChange(paused=paused))


def set_queue_limits(container: Any, name: str, limits: Mapping[str, str]) -> None:
    """Set the limits the form holds (an empty field clears one, a field left out of
    the form keeps it); a bad value or an unknown field is InvalidRequest."""
    values: dict[str, object] = dict.fromkeys(LIMITS, UNSET)
    for field, given in limits.items():
        if field not in values:
            raise InvalidRequest(field, "is not a queue limit")
        text = given.strip()
        if not text:
            values[field] = None
        elif field in _COUNTED:
            # the domain names a bad one (isdigit alone admits "²", which int() refuses)
            values[field] = int(text) if text.isascii() and text.isdigit() else text
        else:
            values[field] = text
    _configure(container, name, QueueChange(**values))


def schedules_page(container: Any) -> SchedulesPage:
    if _provider(container, SCHEDULES_PROVIDER) is None:
        return SchedulesPage(available=False)
    try:
        views = container.list_schedules()()
    except SchedulesUnsupported:
        return SchedulesPage(available=False)
    rows = tuple(
        ScheduleRow(
            name=view.record.schedule.name,
            paused=view.record.paused,
            next_tick=when(view.next_tick) or "—",
            last_tick=when(view.record.last_tick) or "—",
            job_type=view.record.schedule.type,
        )
        for view in views
    )
    return SchedulesPage(available=True, schedules=rows)


def set_schedule_paused(container: Any, name: str, paused: bool) -> None:
    if _provider(container, SCHEDULE_UPDATE_PROVIDER) is None:
        raise FeatureUnavailable("schedules")
    try:
        container.pause_schedule()(name, paused)
    except SchedulesUnsupported:
        raise FeatureUnavailable("schedules") from None

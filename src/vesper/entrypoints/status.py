"""`vesper status`: queue counts and the fleet as tables; `--watch` keeps them live.

The live view (rich Live) redraws every second: jobs by status and priority, the
oldest due job, throughput (jobs finished and submitted per second, from the change
in the store's counts between two refreshes) and the fleet. Ctrl+C ends it, exit 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import attrs
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vesper.application.periodic import ScheduleView
from vesper.domain.fleet import Fleet
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats
from vesper.entrypoints.app import App

FINISHED = (Status.DONE, Status.DLQ, Status.CANCELLED)


def print_status(app: App, console: Console | None = None) -> None:
    console = console or Console()
    stats = app.container.get_stats()()
    fleet = app.container.get_fleet()()
    console.print(queue_table(stats))
    console.print(fleet_table(fleet))


def queue_table(stats: QueueStats) -> Table:
    queue = Table(title="queue")
    for status in Status:
        queue.add_column(status.value, justify="right")
    queue.add_column("oldest due", justify="right")
    counts = stats.by_status
    queue.add_row(
        *(str(counts[status]) for status in Status), f"{stats.oldest_due_age.total_seconds():.1f}s"
    )
    return queue


def fleet_table(fleet: Fleet) -> Table:
    workers = Table(
        title=f"fleet: {fleet.total_workers} workers in {len(fleet.processes)} processes"
    )
    for column in ("worker", "machine", "pid", "slots", "last heartbeat"):
        workers.add_column(column)
    for process in fleet.processes:
        workers.add_row(
            process.id,
            process.machine,
            str(process.pid),
            str(process.concurrency),
            process.last_heartbeat.strftime("%H:%M:%S"),
        )
    return workers


# -- the live view -----------------------------------------------------------------------


@attrs.frozen
class Sample:
    """What one refresh read from the store, and when (monotonic seconds)."""

    at: float
    stats: QueueStats
    fleet: Fleet


@attrs.frozen
class Throughput:
    finished_per_second: float
    submitted_per_second: float


def throughput(before: Sample | None, after: Sample) -> Throughput | None:
    """Rates between two refreshes; None for the first one. Jobs deleted meanwhile (none
    are, today) would make a rate dip, never go negative."""
    if before is None or after.at <= before.at:
        return None
    seconds = after.at - before.at

    def finished(sample: Sample) -> int:
        return sum(sample.stats.by_status[s] for s in FINISHED)

    def submitted(sample: Sample) -> int:
        return sum(sample.stats.by_status.values())

    return Throughput(
        finished_per_second=max(finished(after) - finished(before), 0) / seconds,
        submitted_per_second=max(submitted(after) - submitted(before), 0) / seconds,
    )


def render(sample: Sample, rate: Throughput | None, *, now: datetime | None = None) -> Group:
    """One frame of `vesper status --watch`."""
    now = now or datetime.now(UTC)
    fleet = sample.fleet
    header = Text.assemble(
        ("vesper status", "bold"),
        f"  {now:%H:%M:%S}  ",
        (
            f"finished {rate.finished_per_second:.1f}/s  submitted "
            f"{rate.submitted_per_second:.1f}/s"
            if rate is not None
            else "throughput: measuring..."
        ),
        f"  fleet: {len(fleet.processes)} processes, {fleet.total_workers} slots",
    )
    return Group(
        header, queue_table(sample.stats), priority_table(sample.stats), fleet_table(fleet)
    )


def priority_table(stats: QueueStats) -> Table:
    """Waiting and running jobs by priority, highest first (what is claimed next)."""
    table = Table(title="by priority")
    table.add_column("priority", justify="right")
    for status in (Status.PENDING, Status.FAILED, Status.PROCESSING):
        table.add_column(status.value, justify="right")
    priorities = sorted({priority for _, priority in stats.counts}, reverse=True)
    for priority in priorities:
        row = [stats.counts.get((s, priority), 0) for s in (Status.PENDING, Status.FAILED)]
        row.append(stats.counts.get((Status.PROCESSING, priority), 0))
        if any(row):
            table.add_row(str(priority), *map(str, row))
    return table


def watch_status(
    app: App,
    console: Console | None = None,
    *,
    interval: float = 1.0,
    count: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Redraw the status every `interval` seconds until Ctrl+C (or `count` frames)."""
    console = console or Console()
    get_stats = app.container.get_stats()
    get_fleet = app.container.get_fleet()
    previous: Sample | None = None
    frames = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while count is None or frames < count:
                started = clock()
                try:
                    sample = Sample(at=clock(), stats=get_stats(), fleet=get_fleet())
                except Exception as exc:  # the store is down: say so, keep watching
                    live.update(Text(f"vesper status: store unavailable: {exc}"), refresh=True)
                else:
                    live.update(render(sample, throughput(previous, sample)), refresh=True)
                    previous = sample
                frames += 1
                if count is None or frames < count:
                    time.sleep(max(interval - (clock() - started), 0.0))
        except KeyboardInterrupt:
            pass  # Ctrl+C: leave the last frame on screen, exit 0


def schedules_table(views: list[ScheduleView]) -> Table:
    """`vesper schedules`: one row per schedule, times in UTC."""
    table = Table(title=f"schedules: {len(views)}")
    for column in ("name", "cron", "timezone", "type", "next tick", "last tick", "state"):
        table.add_column(column)

    def shown(moment: datetime | None) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"

    for view in views:
        schedule = view.record.schedule
        state = "paused" if view.record.paused else "active"
        if view.stale:
            state += f", stale (last declared {shown(view.record.last_declared_at)})"
        table.add_row(
            schedule.name,
            schedule.cron,
            schedule.timezone,
            schedule.type,
            shown(view.next_tick),
            shown(view.record.last_tick),
            state,
        )
    return table

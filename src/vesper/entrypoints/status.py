"""`vesper status`: queue counts and the fleet as tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from vesper.domain.states import Status
from vesper.entrypoints.app import App


def print_status(app: App, console: Console | None = None) -> None:
    console = console or Console()
    stats = app.container.get_stats()()
    fleet = app.container.get_fleet()()
    queue = Table(title="queue")
    for status in Status:
        queue.add_column(status.value, justify="right")
    queue.add_column("oldest due", justify="right")
    counts = stats.by_status
    queue.add_row(
        *(str(counts[status]) for status in Status), f"{stats.oldest_due_age.total_seconds():.1f}s"
    )
    console.print(queue)
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
    console.print(workers)

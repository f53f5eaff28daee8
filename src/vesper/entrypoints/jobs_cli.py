"""`vesper jobs retry|cancel`: the bulk actions from the command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click

from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import InvalidRequest, VesperError
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.settings import ConfigError, describe_store


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"vesper: {message}", err=True)
    sys.exit(code)


def _filter_options(function: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option(
            "--status", type=click.Choice([s.value for s in Status]), help="Only this status."
        ),
        click.option("--type", "job_type", help="Only jobs of this type."),
        click.option("--queue", help="Only jobs of this queue."),
        click.option("--priority", type=click.IntRange(0, 10), help="Only this priority."),
        click.option(
            "--created-before",
            help="Only jobs created before this RFC 3339 date-time (with an offset).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _run(
    action: BulkAction,
    status: str | None,
    job_type: str | None,
    queue: str | None,
    priority: int | None,
    created_before: str | None,
) -> None:
    try:
        moment = datetime.fromisoformat(created_before) if created_before else None
    except ValueError:
        _fail(f"--created-before {created_before!r}: not an RFC 3339 date-time", 2)
    try:
        where = BulkFilter(
            status=Status(status) if status is not None else None,
            type=job_type,
            queue=queue,
            priority=priority,
            created_before=moment,
        )
    except InvalidRequest as exc:
        _fail(str(exc), 2)
    app = App()
    try:
        click.echo(f"vesper: {describe_store(app.settings)}", err=True)
    except ConfigError as exc:
        _fail(str(exc), 2)
    try:
        done = app.container.bulk_jobs()(action, where)
    except InvalidRequest as exc:
        _fail(str(exc), 2)
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    click.echo(json.dumps({"count": done.changed, "skipped": done.skipped}))


@click.group()
def jobs() -> None:
    """Act on every job matching a filter (in batches of short transactions)."""


@jobs.command()
@_filter_options
def retry(
    status: str | None,
    job_type: str | None,
    queue: str | None,
    priority: int | None,
    created_before: str | None,
) -> None:
    """Retry the dlq, failed or cancelled jobs matching the filter; print the count, and
    how many were skipped (finished jobs whose unique key an active job holds)."""
    _run(BulkAction.RETRY, status, job_type, queue, priority, created_before)


@jobs.command()
@_filter_options
def cancel(
    status: str | None,
    job_type: str | None,
    queue: str | None,
    priority: int | None,
    created_before: str | None,
) -> None:
    """Cancel the pending or failed jobs matching the filter; print the count."""
    _run(BulkAction.CANCEL, status, job_type, queue, priority, created_before)

"""`vesper queues`: list queues, pause and resume them, set their limits.

Changes are stored in the database: every worker of the fleet applies them at its
next claim.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from vesper.domain.errors import InvalidRequest, VesperError
from vesper.domain.queues import UNSET, QueueChange
from vesper.entrypoints.app import App
from vesper.entrypoints.settings import ConfigError, describe_store
from vesper.entrypoints.wire import queue_to_wire

CLEAR = "none"  # a limit given as this is cleared


def _app() -> App:
    app = App()
    try:
        settings = app.settings
    except ConfigError as exc:
        click.echo(f"vesper: {exc}", err=True)
        sys.exit(2)
    click.echo(f"vesper: {describe_store(settings)}", err=True)
    return app


def _run(work: Callable[[App], Any]) -> Any:
    app = _app()
    try:
        return work(app)
    except InvalidRequest as exc:
        click.echo(f"vesper: {exc}", err=True)
        sys.exit(2)
    except VesperError as exc:
        click.echo(f"vesper: {exc}", err=True)
        sys.exit(1)
    finally:
        app.close()


def _table(rows: list[dict[str, Any]]) -> None:
    header = f"{'QUEUE':<20} {'PENDING':>8} {'RUNNING':>8} {'FAILED':>7} {'DLQ':>6}  SETTINGS"
    click.echo(header)
    for row in rows:
        counts = row["by_status"]
        limits = [
            f"{name}={row[name]}"
            for name in ("concurrency", "rate", "key_concurrency", "aging")
            if row[name] is not None
        ]
        settings = " ".join((["PAUSED"] if row["paused"] else []) + limits) or "-"
        if row["unserved_types"]:
            settings += f"  unserved: {', '.join(row['unserved_types'])}"
        click.echo(
            f"{row['name']:<20} {counts['pending']:>8} {counts['processing']:>8} "
            f"{counts['failed']:>7} {counts['dlq']:>6}  {settings}"
        )


@click.group("queues", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def queues_command(ctx: click.Context, as_json: bool) -> None:
    """List the queues (or pause, resume, set one: see the subcommands)."""
    if ctx.invoked_subcommand is not None:
        return
    views = _run(lambda app: app.container.list_queues()())
    rows = [queue_to_wire(view) for view in views]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _table(rows)


def _change(name: str, change: QueueChange) -> None:
    view = _run(lambda app: app.container.configure_queue()(name, change))
    click.echo(json.dumps(queue_to_wire(view), indent=2))


@queues_command.command()
@click.argument("name")
def pause(name: str) -> None:
    """Claim nothing from queue NAME anywhere in the fleet."""
    _change(name, QueueChange(paused=True))


@queues_command.command()
@click.argument("name")
def resume(name: str) -> None:
    """Let queue NAME be claimed again."""
    _change(name, QueueChange(paused=False))


def _limit(value: str | None, parse: Callable[[str], object]) -> object:
    if value is None:
        return UNSET
    if value.strip().lower() == CLEAR:
        return None
    return parse(value)


def _count(value: str) -> object:
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() else value  # the domain names a bad one


@queues_command.command("set")
@click.argument("name")
@click.option("--concurrency", help="Jobs of the queue processing at once, fleet-wide.")
@click.option("--rate", help='Claims per period, fleet-wide: "50/1s", "100/1m".')
@click.option("--key-concurrency", help="Processing jobs per concurrency_key.")
@click.option("--aging", help='Effective priority +1 per this long waited: "5m".')
def set_(
    name: str,
    concurrency: str | None,
    rate: str | None,
    key_concurrency: str | None,
    aging: str | None,
) -> None:
    """Set queue NAME's limits; a value of "none" clears one, an option left out keeps it."""
    _change(
        name,
        QueueChange(
            concurrency=_limit(concurrency, _count),
            rate=_limit(rate, str),
            key_concurrency=_limit(key_concurrency, _count),
            aging=_limit(aging, str),
        ),
    )

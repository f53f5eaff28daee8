"""The `vesper` command. Exit codes: 0 ok, 1 failure, 2 usage or configuration error."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import click
from dotenv import load_dotenv

from vesper.application.ports import store_migrator
from vesper.domain.errors import InvalidRequest, InvalidSchedule, VesperError
from vesper.domain.job import JobId
from vesper.entrypoints.app import App
from vesper.entrypoints.bench import bench
from vesper.entrypoints.container import build_container
from vesper.entrypoints.jobs_cli import jobs
from vesper.entrypoints.logs import configure_logging
from vesper.entrypoints.queues_cli import queues_command
from vesper.entrypoints.service import listen
from vesper.entrypoints.settings import ConfigError, Settings, describe_store
from vesper.entrypoints.supervisor import Supervisor, child_command, default_processes
from vesper.entrypoints.wire import job_to_wire, schedule_to_wire

F = TypeVar("F", bound=Callable[..., Any])


def load_app(path: str | None) -> App:
    """The user's App from "module:attribute" (a factory function works too)."""
    if not path:
        return App()
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise click.UsageError(
            f"--app {path!r}: expected module:attribute, e.g. myproject.jobs:app"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: modules of the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"--app {path!r}: cannot import {module_name!r}: {exc}") from None
    except InvalidSchedule as exc:  # raised by app.periodic(...) as the module loads
        _fail(str(exc), 2)
    target = getattr(module, attribute, None)
    if target is None:
        raise click.UsageError(f"--app {path!r}: {module_name!r} has no attribute {attribute!r}")
    if not isinstance(target, App) and callable(target):
        target = target()
    if not isinstance(target, App):
        raise click.UsageError(f"--app {path!r}: {attribute!r} is not a vesper.App")
    return target


def app_option(function: F) -> F:
    return click.option(
        "--app",
        "app_path",
        envvar="VESPER_APP",
        metavar="MODULE:ATTR",
        help="Your vesper.App (or a function returning one). Env: VESPER_APP.",
    )(function)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"vesper: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vesper-hivemind")
def main() -> None:
    """vesper: a distributed job queue. Configuration comes from the environment
    (and a .env file in the current directory)."""
    load_dotenv(".env", override=False)


workers_option = click.option(
    "--workers", type=click.IntRange(min=1), help="Job slots in this process (overrides WORKERS)."
)
queues_option = click.option(
    "--queues",
    metavar="QUEUE=SLOTS,...",
    help="Serve these queues, each with its own slots, e.g. email=2,default=10 "
    "(overrides VESPER_QUEUES; unset: WORKERS slots serve every queue).",
)
addr_option = click.option(
    "--addr", help="Listen address, :8080 or host:port (overrides API_ADDR)."
)
API_BACKLOG = 2048  # uvicorn's default: connections queue while every process restarts


@main.command()
@app_option
@workers_option
@addr_option
@queues_option
def serve(app_path: str | None, workers: int | None, addr: str | None, queues: str | None) -> None:
    """Run the HTTP API and the workers in this process (the default deployment)."""
    _override(workers=workers, addr=addr)
    if queues is not None:
        os.environ["VESPER_QUEUES"] = queues
    _load(app_path, announce=False).run(api=True, workers=True)


@main.command()
@app_option
@workers_option
@queues_option
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Worker processes, supervised (default: one per core; 1: this process only).",
)
def worker(
    app_path: str | None, workers: int | None, queues: str | None, processes: int | None
) -> None:
    """Run workers only: claim and run jobs until SIGTERM or Ctrl+C."""
    _override(workers=workers, addr=None)
    if queues is not None:
        os.environ["VESPER_QUEUES"] = queues
    app = _load(app_path, announce=False)
    memory = app.settings.storage == "memory"
    if memory and processes is not None and processes > 1:
        raise click.UsageError(
            "--processes: VESPER_STORAGE=memory keeps jobs inside one process; "
            "several processes need sqlite or postgres"
        )
    if memory:
        click.echo(
            "vesper: warning: VESPER_STORAGE=memory: this worker sees only jobs submitted "
            "inside this process, and nothing survives its exit",
            err=True,
        )
    if not app.consumers:
        raise click.UsageError(
            "no consumer is registered; pass --app module:attribute (or set VESPER_APP)"
        )
    count = processes or (1 if memory else default_processes())
    if count == 1:
        app.run(api=False, workers=True)
        return
    options = ("--app", app_path) if app_path else ()
    _supervise(
        app.settings,
        Supervisor(
            child_command("worker", *options),
            count,
            what="worker",
            metrics_addr=app.settings.metrics_addr,
        ),
    )


@main.command()
@addr_option
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="API processes, supervised, accepting on one socket.",
)
def api(addr: str | None, processes: int) -> None:
    """Run the HTTP API only (producers, tracking, fleet view, metrics)."""
    _override(workers=None, addr=addr)
    app = _load(None, announce=False)
    if processes == 1:
        app.run(api=True, workers=False)
        return
    settings = app.settings
    if settings.storage == "memory":
        raise click.UsageError(
            "--processes: VESPER_STORAGE=memory keeps jobs inside one process; "
            "several processes need sqlite or postgres"
        )
    listener = listen(settings.http.host, settings.http.port)  # a taken port: one line, exit 1
    listener.listen(API_BACKLOG)
    with listener:
        supervisor = Supervisor(
            child_command("api"),
            processes,
            what="api",
            listener=listener,
            metrics_addr=settings.metrics_addr,
        )
        _supervise(settings, supervisor)


def _supervise(settings: Settings, supervisor: Supervisor) -> None:
    configure_logging(settings)
    sys.exit(supervisor.run())


def _override(*, workers: int | None, addr: str | None) -> None:
    if workers is not None:
        os.environ["WORKERS"] = str(workers)
    if addr is not None:
        os.environ["API_ADDR"] = addr


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema, then exit."""
    settings = _load(None).settings
    if settings.storage == "memory":
        click.echo("memory storage has no schema")
        return
    # the store's own hook (Migrator in application/ports.py), on a store opened without
    # auto-migration: the hook is what runs, and says what it did
    container = build_container(attrs.evolve(settings, auto_migrate=False))
    try:
        hook = store_migrator(container.store())
        if hook is None:
            click.echo(f"vesper: store {settings.storage!r} manages its own schema; nothing to do")
            return
        click.echo(hook())
    except VesperError as exc:
        _fail(str(exc))
    finally:
        container.shutdown_resources()


@main.command()
@click.argument("job_type")
@click.option("--payload", default="{}", help="A JSON object.")
@click.option("--priority", type=click.IntRange(0, 10), default=0, show_default=True)
@click.option("--max-retries", type=click.IntRange(min=0))
@click.option("--delay", type=float, help="Seconds before the job is due.")
@click.option("--idempotency-key")
@click.option("--queue", help='The queue (default: "default").')
@click.option("--concurrency-key", help="Groups jobs for the queue's key_concurrency.")
@click.option(
    "--unique-key", help="Return the active job of the same queue with this key instead, if any."
)
def enqueue(
    job_type: str,
    payload: str,
    priority: int,
    max_retries: int | None,
    delay: float | None,
    idempotency_key: str | None,
    queue: str | None,
    concurrency_key: str | None,
    unique_key: str | None,
) -> None:
    """Submit one job and print it as JSON."""
    # a bad input is one line naming the option, exit 2, before anything is opened
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        _fail(f"--payload {payload!r}: not JSON: {exc}", 2)
    if not isinstance(data, dict):
        _fail(f"--payload {payload!r}: must be a JSON object", 2)
    if delay is not None and not math.isfinite(delay):
        _fail(f"--delay {delay!r}: must be a finite number of seconds", 2)
    app = _load(None, announce=False)
    if app.settings.storage == "memory":
        # the job would live in this process only, and this process ends at once
        _fail(
            "VESPER_STORAGE=memory keeps jobs inside one process: `vesper enqueue` would "
            "lose the job at exit; use sqlite or postgres",
            2,
        )
    click.echo(f"vesper: {describe_store(app.settings)}", err=True)
    try:
        job = app.enqueue(
            job_type,
            data,
            priority=priority,
            max_retries=max_retries,
            delay=delay,
            idempotency_key=idempotency_key,
            queue=queue,
            concurrency_key=concurrency_key,
            unique_key=unique_key,
        )
    except InvalidRequest as exc:
        _fail(str(exc), 2)
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    click.echo(json.dumps(job_to_wire(job), indent=2))


@main.command()
@click.argument("job_id")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=60),
    help="Seconds to wait for the job to be done, dlq or cancelled (exit 1 if it is not).",
)
def show(job_id: str, wait: float | None) -> None:
    """Print one job as JSON, its result included."""
    try:
        parsed = JobId(uuid.UUID(job_id))
    except ValueError:
        _fail(f"JOB_ID {job_id!r}: not a job id (a UUID)", 2)
    app = _load(None, announce=False)
    try:
        job = app.container.get_job()(parsed) if wait is None else app.wait(parsed, wait)
    except TimeoutError as exc:
        _fail(str(exc))
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    click.echo(json.dumps(job_to_wire(job), indent=2))


@main.command()
@click.option("--watch", "-w", is_flag=True, help="Keep the view live, redrawn every second.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between redraws (with --watch).",
)
@click.option(
    "--count", "-n", type=click.IntRange(min=1), help="Stop after this many redraws (--watch)."
)
def status(watch: bool, interval: float, count: int | None) -> None:
    """Print queue counts and the fleet; --watch keeps them live until Ctrl+C."""
    from vesper.entrypoints.status import print_status, watch_status  # noqa: PLC0415

    app = _load(None)
    try:
        if watch:
            watch_status(app, interval=interval, count=count)
        else:
            print_status(app)
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def schedules(ctx: click.Context, as_json: bool) -> None:
    """List the periodic schedules (pause, resume and delete are subcommands)."""
    if ctx.invoked_subcommand is not None:
        return
    from vesper.entrypoints.status import schedules_table  # noqa: PLC0415

    app = _load(None)
    try:
        views = app.container.list_schedules()()
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    if as_json:
        wire = [schedule_to_wire(v.record, next_tick=v.next_tick, stale=v.stale) for v in views]
        click.echo(json.dumps({"schedules": wire}, indent=2))
    else:
        from rich.console import Console  # noqa: PLC0415

        Console().print(schedules_table(views))


def _set_paused(name: str, paused: bool) -> None:
    app = _load(None)
    try:
        view = app.container.pause_schedule()(name, paused)
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    click.echo(f"{name}: {'paused' if view.record.paused else 'resumed'}")


@schedules.command("pause")
@click.argument("name")
def pause_schedule(name: str) -> None:
    """Pause a schedule: no worker submits its ticks until it is resumed."""
    _set_paused(name, True)


@schedules.command("resume")
@click.argument("name")
def resume_schedule(name: str) -> None:
    """Resume a paused schedule from its next tick."""
    _set_paused(name, False)


@schedules.command("delete")
@click.argument("name")
def delete_schedule(name: str) -> None:
    """Forget a schedule (one removed from the code, listed as stale)."""
    app = _load(None)
    try:
        app.container.delete_schedule()(name)
    except VesperError as exc:
        _fail(str(exc))
    finally:
        app.close()
    click.echo(f"{name}: deleted")


main.add_command(bench)
main.add_command(queues_command)
main.add_command(jobs)


def _load(app_path: str | None, *, announce: bool = True) -> App:
    """The App, its settings checked; `announce` says which store it uses (on stderr:
    stdout is the command's output). The long-running commands log it instead."""
    app = load_app(app_path)
    try:
        settings = app.settings
    except ConfigError as exc:
        _fail(str(exc), 2)
    if announce:
        click.echo(f"vesper: {describe_store(settings)}", err=True)
    return app


if __name__ == "__main__":
    main()

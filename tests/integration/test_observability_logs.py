"""Logs: JSON lines in production, key=value in development, job and worker ids as
fields of every job line, and no password or token in any line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest

import vesper
from vesper.application.worker_settings import WorkerSettings
from vesper.entrypoints.app import App
from vesper.entrypoints.logs import (
    JobFieldsFilter,
    JsonFormatter,
    KeyValueFormatter,
    Redactor,
    job_fields,
)
from vesper.entrypoints.service import build_runner


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("vesper.worker", logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_extras_as_keys() -> None:
    line = JsonFormatter().format(record("job %s", "done", job_id="j1", worker_id="w1"))
    parsed = json.loads(line)
    assert parsed["message"] == "job done"
    assert parsed["level"] == "info"
    assert parsed["logger"] == "vesper.worker"
    assert (parsed["job_id"], parsed["worker_id"]) == ("j1", "w1")
    assert "\n" not in line


def test_text_lines_append_the_extras_as_key_value() -> None:
    line = KeyValueFormatter().format(
        record("job %s", "failed", job_id="j1", job_type="resize image", attempt=2)
    )
    assert line.endswith('vesper.worker: job failed job_id=j1 job_type="resize image" attempt=2')


def test_secrets_are_redacted_from_both_formats() -> None:
    redact = Redactor(["s3cr3t-pass", "tok-123456"])
    message = (
        "cannot connect to postgresql+psycopg://vesper:s3cr3t-pass@db:5432/vesper (tok-123456)"
    )
    for formatter in (JsonFormatter(redact), KeyValueFormatter(redact)):
        line = formatter.format(record(message, dsn="postgresql://u:other-pass@h/db"))
        assert "s3cr3t-pass" not in line
        assert "tok-123456" not in line
        assert "other-pass" not in line
        assert "vesper:***@db" in line


def test_redactor_reads_db_password_and_api_token_from_the_environment() -> None:
    redact = Redactor.from_env({"DB_PASSWORD": "hunter22", "VESPER_API_TOKEN": "abcdefgh"})
    assert redact("pw=hunter22 token=abcdefgh") == "pw=*** token=***"
    assert Redactor.from_env({})("nothing to hide") == "nothing to hide"


def test_in_production_the_database_address_is_redacted_from_both_formats() -> None:
    env = {"DB_HOST": "db.example", "DB_PORT": "6543", "DB_USER": "bob", "DB_PASSWORD": "pw1234"}
    redact = Redactor.from_env(env, addresses=True)
    message = (
        'connection failed: connection to server at "db.example" (10.1.2.3), port 6543 '
        'failed: FATAL:  password authentication failed for user "bob" (db.example:6543)'
    )
    for formatter in (JsonFormatter(redact), KeyValueFormatter(redact)):
        line = formatter.format(record(message))
        for shown in ("db.example", "10.1.2.3", "6543", '"bob"', "pw1234"):
            assert shown not in line
        assert "connection to server at *** failed" in line
    assert "db.example" in Redactor.from_env(env)(message)  # development keeps it


def test_every_job_line_of_the_worker_has_job_and_worker_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App({"VESPER_STORAGE": "memory", "VESPER_RETRY_BASE": "1ms", "VESPER_RETRY_CAP": "1ms"})

    @app.consumer("boom")
    def boom(job: vesper.Job) -> None:
        raise RuntimeError("no")

    job = app.enqueue("boom", max_retries=0)
    runner = build_runner(app)
    caplog.set_level(logging.DEBUG, logger="vesper")
    try:
        asyncio.run(asyncio.wait_for(runner.run(until_idle=True), 30))
    finally:
        app.close()
    lines = [r for r in caplog.records if r.name == "vesper.worker" and r.getMessage() == "job dlq"]
    assert len(lines) == 1
    fields = lines[0].__dict__
    assert fields["job_id"] == str(job.id)
    assert fields["worker_id"] == runner.identity.id
    assert fields["job_type"] == "boom"
    assert fields["outcome"] == "dlq"
    assert fields["attempt"] == 1


def test_lines_logged_while_a_job_runs_carry_its_ids() -> None:
    lines: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    handler = Keep()
    handler.addFilter(JobFieldsFilter())
    logger = logging.getLogger("vesper.test_job_fields")
    logger.addHandler(handler)
    logger.propagate = False
    try:

        async def consumer_like() -> None:
            logger.warning("inside")

        async def main() -> None:
            with job_fields(job_id="j9", worker_id="w9"):
                await asyncio.create_task(consumer_like())  # a task copies the context
            logger.warning("outside")

        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    inside, outside = lines
    assert (inside.__dict__["job_id"], inside.__dict__["worker_id"]) == ("j9", "w9")
    assert "job_id" not in outside.__dict__


def test_finished_jobs_are_summed_up_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """A done job's own line is DEBUG (for throughput); INFO gets a line every
    fleet_log_interval with the outcomes since the last one, and one more at the stop."""
    app = App(
        {
            "VESPER_STORAGE": "memory",
            "VESPER_HEARTBEAT": "50ms",
            "VESPER_RETRY_BASE": "1ms",
            "VESPER_RETRY_CAP": "1ms",
        }
    )

    @app.consumer("ok")
    def ok(job: vesper.Job) -> None:
        if job.payload.get("slow"):
            time.sleep(0.6)  # the run outlasts a summary interval or two

    @app.consumer("boom")
    def boom(job: vesper.Job) -> None:
        raise RuntimeError("no")

    for _ in range(3):
        app.enqueue("ok")
    app.enqueue("ok", {"slow": True})
    app.enqueue("boom", max_retries=1)  # fails once (a retry), then dlq
    runner = app.container.worker_runner(
        consumers=app.consumers,
        settings=WorkerSettings(fleet_log_interval=timedelta(milliseconds=200)),
    )
    caplog.set_level(logging.INFO, logger="vesper")
    try:
        asyncio.run(asyncio.wait_for(runner.run(until_idle=True), 30))
    finally:
        app.close()
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("jobs: ")]
    assert len(summaries) >= 2, summaries  # at least one periodic line, and the last one
    totals = Counter[str]()
    for line in summaries:
        assert re.fullmatch(
            r"jobs: done=\d+ failed=\d+ dlq=\d+ abandoned=\d+ snoozed=\d+ cancelled=\d+"
            r" in the last \d+s",
            line,
        )
        totals.update({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)})
    assert totals == {
        "done": 4,
        "failed": 1,
        "dlq": 1,
        "abandoned": 0,
        "snoozed": 0,
        "cancelled": 0,
    }
    assert not [r for r in caplog.records if r.getMessage() == "job done"]  # DEBUG stays off


def test_text_lines_escape_control_characters() -> None:
    """A job's type or error carrying ANSI codes or a newline neither colours the
    terminal nor forges a line: the text formatter writes them escaped."""
    red = "\x1b[31m"
    rec = record("job %s: %s", "failed", f"{red}boom\nINFO forged line", job_type=f"t{red}")
    try:
        raise RuntimeError(f"consumer said {red}no")
    except RuntimeError:
        rec.exc_info = sys.exc_info()
    text = KeyValueFormatter().format(rec)
    assert "\x1b" not in text
    head, *traceback = text.split("\n")
    assert head.endswith(r'job failed: \x1b[31mboom\nINFO forged line job_type="t\u001b[31m"')
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == r"RuntimeError: consumer said \x1b[31mno"
    # JSON escapes them by itself
    assert "\x1b" not in JsonFormatter().format(rec)


def test_uvicorns_coloured_copy_of_a_message_is_left_out() -> None:
    """uvicorn attaches `color_message` (its message with terminal colours) to its
    records: a field that repeats the message, with escape codes in it."""
    rec = record("Started server process [%d]", 42, color_message="[\x1b[36m%d\x1b[0m]")
    assert KeyValueFormatter().format(rec).endswith("Started server process [42]")
    assert "color_message" not in JsonFormatter().format(rec)

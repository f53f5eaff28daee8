"""Logging for the service: readable key=value lines in development, JSON in production.

One hierarchy (`vesper`, `vesper.worker`, `vesper.http`, `vesper.listen`, ...) under
the root logger. Structured fields travel as the record's extras (`log.info("job done",
extra={"job_id": ...})`): the JSON formatter makes them keys, the text formatter
appends them as `key=value`. Both formatters redact secrets from the final line: the
password of any URL (`postgresql://vesper:***@db/vesper`) and the values of
DB_PASSWORD and VESPER_API_TOKEN wherever they appear; in production also the
database's address (its host and port, and the names libpq's messages quote), which the
text of a driver's error carries. The text formatter writes control characters escaped
(`\x1b[31m`, `\n`): a job's type or error message must not colour the operator's
terminal or forge a line (JSON escapes them already).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from vesper.entrypoints.settings import Settings

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # added by Python 3.12's LogRecord
    "color_message",  # uvicorn's copy of the message with terminal colours
}
SECRET_VARIABLES = ("DB_PASSWORD", "VESPER_API_TOKEN")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)")
_BARE = re.compile(r"^[^\s=\"\x00-\x1f\x7f-\x9f]+$")
# C0, DEL and C1 controls; the traceback keeps its newlines
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # "\x1b", "\n", "\t"


# what libpq's messages quote: `connection to server at "db" (10.0.0.5), port 5432 failed`,
# `for user "vesper"`, `host name "db"`, a socket (a database's name is no address)
# (the quotes escaped, \", in a JSON line)
_LIBPQ_NAMED = re.compile(
    r'(?P<what>server at|on socket|host name|host|user) \\?"[^"\\]*\\?"'
    r"(?: \([^)]*\))?(?:, port \d+)?"
)


class Redactor:
    """Removes passwords and tokens (and, with `addresses`, the database's address) from
    text that is about to be written."""

    def __init__(self, secrets: Iterable[str] = (), *, addresses: bool = False) -> None:
        # short values would redact half the log: a secret this short is no secret
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._addresses = addresses

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, addresses: bool = False) -> Redactor:
        """`addresses`: hide the database's host and port too (DB_HOST, DB_PORT, or
        VESPER_DATABASE_URL's), and whatever libpq's messages quote."""
        secrets = [env.get(name, "") for name in SECRET_VARIABLES]
        if addresses:
            secrets += _database_address(env)
        return cls(secrets, addresses=addresses)

    def __call__(self, text: str) -> str:
        text = _URL_PASSWORD.sub(r"\g<head>***", text)
        if self._addresses:
            text = _LIBPQ_NAMED.sub(r"\g<what> ***", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _database_address(env: Mapping[str, str]) -> list[str]:
    """The database's host, and host:port, as a log line could spell them."""
    host, port = env.get("DB_HOST", ""), env.get("DB_PORT", "") or "5432"
    url = env.get("VESPER_DATABASE_URL", "")
    if "://" in url:
        parts = urlsplit(url)
        with contextlib.suppress(ValueError):  # a port that is not a number
            host, port = parts.hostname or host, str(parts.port or port)
    if not host:
        return []
    # a port alone is a number that may be part of anything: hidden only beside its host
    return [f"{host}:{port}", f"[{host}]:{port}", host]


_JOB_FIELDS: ContextVar[Mapping[str, object] | None] = ContextVar("vesper_job_fields", default=None)


class job_fields:
    """Fields (job_id, worker_id) added to every line logged in this context: the
    runner's lines about an attempt and those of async consumers (sync consumers run
    in a pool thread, outside the context). A class, not a generator: one per job."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: object) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _JOB_FIELDS.set({**(_JOB_FIELDS.get() or {}), **self._fields})

    def __exit__(self, *_: object) -> None:
        _JOB_FIELDS.reset(self._token)


class JobFieldsFilter(logging.Filter):
    """Adds the context's job fields to each record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_JOB_FIELDS.get() or {}).items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_extras(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(line, default=str))


class KeyValueFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, for people reading a terminal."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._redact = redact or Redactor()

    def formatMessage(self, record: logging.LogRecord) -> str:
        # the line itself: its newlines escaped too, so the first "\n" starts a traceback
        return _CONTROL.sub(_escape, super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        head, newline, rest = super().format(record).partition("\n")
        fields = " ".join(f"{k}={_value(v)}" for k, v in _extras(record).items())
        if fields:
            head = f"{head} {fields}"  # fields before any traceback
        return self._redact(f"{head}{newline}{_CONTROL_BUT_NEWLINE.sub(_escape, rest)}")


def _value(value: object) -> str:
    text = str(value)
    return text if _BARE.match(text) else json.dumps(text)


def configure_logging(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Set up the root logger once, unless the embedding program already did."""
    root = logging.getLogger()
    if root.handlers:
        return
    env = os.environ if env is None else env
    redact = Redactor.from_env(env, addresses=settings.production)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(redact))
    else:
        handler.setFormatter(KeyValueFormatter(redact))
    handler.addFilter(JobFieldsFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)  # VESPER_LOG_LEVEL, checked by Settings
    # alembic's INFO lines (its plugins, each migration step) say nothing an operator
    # needs; its warnings still come, in vesper's format
    logging.getLogger("alembic").setLevel(logging.WARNING)

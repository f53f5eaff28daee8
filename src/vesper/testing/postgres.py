"""A scratch PostgreSQL database for tests: create, empty, drop; skip or fail when the
server is unreachable.

The admin URL (a role that may CREATE DATABASE) comes from VESPER_TEST_DATABASE_URL.
Outside CI an unreachable server skips the test with the URL in the reason; with CI=true
it fails, so that a green run never hides an untested adapter. SQLAlchemy and psycopg
load inside the functions: importing this module needs neither.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ADMIN_URL_VARIABLE = "VESPER_TEST_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VESPER_TABLES = ("vesper_jobs", "vesper_workers", "vesper_schedules", "vesper_queues")
CONNECT_TIMEOUT_SECONDS = 5
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def admin_url(env: Mapping[str, str] | None = None) -> str:
    """The admin connection URL: VESPER_TEST_DATABASE_URL, or the local server."""
    env = os.environ if env is None else env
    return env.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("CI", "").lower() == "true"


def shown(url: str) -> str:
    """`url` with any password hidden, for messages."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


def require_server(url: str, *, env: Mapping[str, str] | None = None) -> None:
    """Connect once to `url`; when that fails, skip the test (or fail it in CI)."""
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    try:
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        reason = (
            f"PostgreSQL is unreachable at {shown(url)} (set {ADMIN_URL_VARIABLE}): "
            f"{_first_line(exc)}"
        )
        if in_ci(env):
            pytest.fail(f"{reason}; CI=true, so the PostgreSQL tests may not be skipped")
        pytest.skip(reason)


@contextmanager
def scratch_database(url: str, *, prefix: str = "vesper_test_") -> Iterator[str]:
    """A new database on `url`'s server, named `prefix` + random hex; yields its URL and
    drops it on exit (WITH (FORCE): connections left open do not keep it alive)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    name = f"{prefix}{secrets.token_hex(6)}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a safe database name: {name!r}")
    admin = _engine(url)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def table_exists(url: str, table: str) -> bool:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT to_regclass(%(t)s)", {"t": table}).scalar()
        return found is not None
    finally:
        engine.dispose()


def truncate(url: str, tables: Sequence[str] = VESPER_TABLES) -> None:
    """Empty `tables` (all in one statement, so foreign keys between them do not object)."""
    for table in tables:
        if not _NAME.fullmatch(table):
            raise ValueError(f"not a safe table name: {table!r}")
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

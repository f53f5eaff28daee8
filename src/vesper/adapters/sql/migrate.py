"""Apply the alembic migrations from inside vesper: no alembic.ini at run time.

Idempotent (a database at the head revision is left alone, after one cheap query) and
safe when several processes start together: on PostgreSQL the upgrade runs under a
transaction-scoped advisory lock, on SQLite inside a BEGIN IMMEDIATE transaction, so the
second process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from vesper.adapters.sql.engines import Database, open_engine, sql_url
from vesper.adapters.sqlcore.tables import VERSION_TABLE

SCRIPT_LOCATION = "vesper.adapters.sql:migrations"
# pg_advisory_xact_lock key: any constant that other applications are unlikely to use
ADVISORY_LOCK_KEY = 0x7665_7370_6572  # "vesper"


def alembic_config() -> Config:
    """An alembic Config pointing into this package (for `command.*` calls)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


class Migration(NamedTuple):
    """What a migration did: from which revision (None: an empty database) to which,
    applying how many revisions (0: it was at the head already)."""

    before: str | None
    after: str | None
    applied: int


@functools.cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def migrate(url: str) -> Migration:
    """Bring the database at `url` to the newest schema (a no-op when it is there).

    Raises:
        StoreUnavailable: the database did not answer.
    """
    engine = open_engine(sql_url(url), pool_size=1, max_overflow=0)
    try:
        return migrate_database(Database(engine))
    finally:
        engine.dispose()


def migrate_database(db: Database) -> Migration:
    """Bring `db` to the head revision, unless it is there already."""
    current = db.read(_current_revision)
    if current == head_revision():
        return Migration(current, current, 0)
    return db.transaction(_upgrade)


def _current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _upgrade(conn: Connection) -> Migration:
    if conn.dialect.name == "postgresql":
        # released at commit; a second process waits here, then finds the schema at head
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    before, head = _current_revision(conn), head_revision()
    if before == head:
        return Migration(before, head, 0)
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
    script = ScriptDirectory.from_config(config)
    applied = len(list(script.iterate_revisions(head, before or "base")))
    return Migration(before, head, applied)

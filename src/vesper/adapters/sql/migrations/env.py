"""Alembic's environment for vesper: run by `vesper.adapters.sql.migrate`, or by the
alembic command line with `sqlalchemy.url` set in an alembic.ini of your own."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from vesper.adapters.sqlcore.tables import VERSION_TABLE, metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    config = context.config
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:  # vesper's migrate(): it holds the lock and the transaction
        _configure(connection)
        return
    from vesper.adapters.sql.engines import open_engine, sql_url  # noqa: PLC0415

    engine = open_engine(sql_url(str(config.get_main_option("sqlalchemy.url"))))
    try:
        with engine.connect() as conn:
            _configure(conn)
            conn.commit()
    finally:
        engine.dispose()


_run()

"""Scratch databases for tests, for any SQLAlchemy URL: a new empty database, dropped on exit.

```python
from vesper.testing.scratch import scratch_database

with scratch_database("sqlite://") as url:            # a file in a new temp directory
    ...
with scratch_database("postgresql+psycopg://postgres@127.0.0.1/postgres") as url:
    ...                                                # CREATE DATABASE, DROP ... (FORCE)
```

A server URL names a role that may create databases (its own database is only where
the admin connection goes). PostgreSQL, SQLite, MySQL and MariaDB are known; another
backend registers its own in `SCRATCH` under its SQLAlchemy backend name: a function
`(url, name) -> context manager yielding the new database's URL`. The MySQL/MariaDB
entry (CREATE DATABASE / DROP DATABASE through SQLAlchemy) is not exercised by vesper's
own tests: there is no such server in its CI. SQLAlchemy loads inside the functions.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from vesper.testing import postgres

ScratchFactory = Callable[[str, str], AbstractContextManager[str]]


@contextmanager
def _sqlite(url: str, name: str) -> Iterator[str]:
    """A file in a new temporary directory (its -wal and -shm files go with it)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="vesper-scratch-"))
    try:
        path = directory / f"{name}.db"
        yield make_url(url).set(database=str(path)).render_as_string(hide_password=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _postgresql(url: str, name: str) -> Iterator[str]:
    with postgres.scratch_database(url, prefix=name) as made:
        yield made


@contextmanager
def _server_database(url: str, name: str) -> Iterator[str]:
    """CREATE DATABASE and DROP DATABASE, quoted by the dialect (MySQL, MariaDB)."""
    from sqlalchemy import create_engine  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.pool import NullPool  # noqa: PLC0415

    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
    finally:
        admin.dispose()


SCRATCH: dict[str, ScratchFactory] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mysql": _server_database,
    "mariadb": _server_database,
}


@contextmanager
def scratch_database(url: str, *, prefix: str = "vesper_test_") -> Iterator[str]:
    """A new, empty database of `url`'s backend, named `prefix` + random hex; yields
    its URL (a SQLAlchemy URL of the same driver) and drops it on exit.

    Raises:
        ValueError: a backend with no entry in SCRATCH.
    """
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    backend = make_url(url).get_backend_name()
    factory = SCRATCH.get(backend)
    if factory is None:
        known = ", ".join(sorted(SCRATCH))
        raise ValueError(
            f"no scratch databases for {backend!r} (known: {known}); "
            "add one to vesper.testing.scratch.SCRATCH"
        )
    with factory(url, f"{prefix}{secrets.token_hex(6)}") as made:
        yield made

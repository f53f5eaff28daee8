"""Settings from the environment: the store and where it is, the database pool and
connection limit variables, and their checks."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from vesper.entrypoints.cli import main
from vesper.entrypoints.container import build_container
from vesper.entrypoints.settings import ConfigError, Settings, describe_store

BASE = {"VESPER_STORAGE": "memory"}


def test_the_pool_defaults_are_ten_plus_five() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.db_pool_size, settings.db_max_overflow) == (10, 5)


def test_the_pool_variables_are_read() -> None:
    env = {**BASE, "VESPER_DB_POOL_SIZE": "3", "VESPER_DB_MAX_OVERFLOW": "0"}
    settings = Settings.from_env(env)
    assert (settings.db_pool_size, settings.db_max_overflow) == (3, 0)
    options = build_container(settings).config()["store_options"]  # what the factory gets
    assert (options.pool_size, options.max_overflow, options.auto_migrate) == (3, 0, True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VESPER_DB_POOL_SIZE", "0"),
        ("VESPER_DB_POOL_SIZE", "-2"),
        ("VESPER_DB_POOL_SIZE", "ten"),
        ("VESPER_DB_POOL_SIZE", "2.5"),
        ("VESPER_DB_MAX_OVERFLOW", "-1"),
        ("VESPER_DB_MAX_OVERFLOW", "many"),
    ],
)
def test_a_bad_pool_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ")
    assert "\n" not in message


@pytest.mark.parametrize("command", ["serve", "worker", "api"])
def test_a_bad_pool_value_stops_start_up_with_exit_2(command: str) -> None:
    with socket.socket() as taken:  # were the value accepted, serving would fail, not hang
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**BASE, "VESPER_DB_POOL_SIZE": "0", "API_ADDR": addr, "VESPER_APP": ""}
        result = CliRunner().invoke(main, [command], env=env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["vesper: VESPER_DB_POOL_SIZE='0': must be at least 1, not 0"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "uvloop"), ("auto", "uvloop"), ("UVLOOP", "uvloop"), ("asyncio", None)],
)
def test_event_loop_choice(value: str, expected: str | None) -> None:
    from vesper.entrypoints.service import event_loop_factory  # noqa: PLC0415

    settings = Settings.from_env({**BASE, "VESPER_EVENT_LOOP": value})
    factory = event_loop_factory(settings.event_loop)
    assert (factory.__module__.split(".")[0] if factory else None) == expected


def test_an_unknown_event_loop_is_refused_with_its_name() -> None:
    with pytest.raises(
        ConfigError, match=r"VESPER_EVENT_LOOP='trio': must be auto, asyncio or uvloop"
    ):
        Settings.from_env({**BASE, "VESPER_EVENT_LOOP": "trio"})


@pytest.mark.parametrize(
    ("env", "storage"),
    [
        ({"VESPER_DATABASE_URL": "postgresql+psycopg://u@db:5432/q"}, "postgres"),
        ({"VESPER_DATABASE_URL": "postgresql://u@db/q"}, "postgres"),
        ({"VESPER_DATABASE_URL": "postgres://u@db/q"}, "postgres"),
        ({"VESPER_DATABASE_URL": "sqlite:///q.db"}, "sqlite"),
        ({"VESPER_DATABASE_URL": "sqlite:///q.db", "DB_HOST": "db"}, "sqlite"),
        ({"VESPER_DATABASE_URL": "memory://"}, "memory"),
        ({"VESPER_DATABASE_URL": "postgresql://u@db/q", "VESPER_STORAGE": "sqlite"}, "sqlite"),
        ({"DB_HOST": "db"}, "postgres"),
        ({}, "sqlite"),
    ],
)
def test_the_url_scheme_chooses_the_store_unless_vesper_storage_does(
    env: dict[str, str], storage: str
) -> None:
    assert Settings.from_env(env).storage == storage


def test_a_url_with_no_store_for_its_scheme_is_one_line_hiding_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"VESPER_DATABASE_URL": "mysql://root:hunter22@db/q"})
    assert str(caught.value).startswith("VESPER_DATABASE_URL=<hidden>: no store for the scheme")
    assert "hunter22" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"VESPER_DATABASE_URL": "postgresql://vesper:pw1234@db.example:6543/jobs"},
            'store: postgres database "jobs" at db.example:6543',
        ),
        (
            {"DB_HOST": "db.example", "DB_PASSWORD": "pw1234", "DB_NAME": "jobs"},
            'store: postgres database "jobs" at db.example:5432',
        ),
        (
            {"APP_ENV": "production", "DB_HOST": "db.example", "DB_PASSWORD": "pw1234"},
            'store: postgres database "vesper"',
        ),
        ({"VESPER_DATABASE_URL": "sqlite:////var/q.db"}, "store: sqlite /var/q.db"),
        ({"APP_ENV": "production", "DB_PATH": "/var/q.db"}, "store: sqlite /var/q.db"),
        ({"VESPER_STORAGE": "memory"}, "store: memory (this process only)"),
    ],
)
def test_the_store_line_says_which_and_where_never_a_password(
    env: dict[str, str], line: str
) -> None:
    assert describe_store(Settings.from_env(env)) == line


def test_the_connection_limits_default_and_are_read() -> None:
    http = Settings.from_env(BASE).http
    assert (http.max_header_bytes, http.max_connections) == (16 * 1024, 1024)
    env = {**BASE, "VESPER_MAX_HEADER_BYTES": "64KiB", "VESPER_MAX_CONNECTIONS": "4096"}
    http = Settings.from_env(env).http
    assert (http.max_header_bytes, http.max_connections) == (64 * 1024, 4096)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VESPER_MAX_HEADER_BYTES", "0"),
        ("VESPER_MAX_HEADER_BYTES", "lots"),
        ("VESPER_MAX_CONNECTIONS", "0"),
        ("VESPER_MAX_CONNECTIONS", "1e3"),
    ],
)
def test_a_bad_connection_limit_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, name: value})
    assert str(caught.value).startswith(f"{name}={value!r}: ")

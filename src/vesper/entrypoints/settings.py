"""Configuration from the environment, with the original service's variable names.

Every value is checked at start-up; a bad one raises ConfigError with one line naming
the variable and the value (never the value of a secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

import attrs

from vesper.application.policies import Policies
from vesper.application.ports import StoreFactory, StoreOptions
from vesper.application.retention import DEFAULT_AGES, Retention
from vesper.application.worker_settings import WorkerSettings
from vesper.domain.backoff import Backoff
from vesper.domain.results import DEFAULT_MAX_RESULT
from vesper.domain.states import Status
from vesper.domain.submission import Limits

BUILTIN_STORAGES = ("memory", "sqlite", "postgres")
DEFAULT_SQLITE_PATH = "Vesper_sqlite.db"
SECRET_VARIABLES = frozenset({"DB_PASSWORD", "VESPER_API_TOKEN", "VESPER_DATABASE_URL"})

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> timedelta:
    """A Go duration ("300ms", "5s", "1m30s", "1h"); a bare number is seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    if not text or _DURATION_PART.sub("", text) != "":
        raise ValueError(f"not a duration: {text!r} (use Go style: 500ms, 5s, 1m30s, 1h)")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def parse_size(text: str) -> int:
    """Bytes, with an optional KiB/MiB/GiB (or KB/MB/GB, taken as binary) suffix."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 1048576, 512KiB, 1MiB)")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(match.group(2) or "")[:1].lower()]
    return int(match.group(1)) * factor


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use 1 or 0)")


def parse_addr(text: str) -> tuple[str, int]:
    """API_ADDR: ":8080" (all interfaces), "host:port", or "[::1]:8080"."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not an address: {text!r} (use :8080 or host:port)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_queue_slots(text: str) -> dict[str, int]:
    """VESPER_QUEUES: "default=10,email=2", each queue served with its own slots."""
    slots: dict[str, int] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition("=")
        name = name.strip()
        if not sep or re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) is None:
            raise ValueError(f"expected queue=slots pairs, e.g. default=10,email=2; got {part!r}")
        if name in slots:
            raise ValueError(f"queue {name!r} is named twice")
        try:
            slots[name] = _positive_int(count.strip())
        except ValueError:
            raise ValueError(f"queue {name!r}: slots must be an integer of 1 or more") from None
    return slots


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return value


def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value < 1:
        raise ValueError(f"must be at least 1 byte, not {text!r}")
    return value


def _retention_age(text: str) -> timedelta | None:
    """VESPER_RETAIN_*: a duration (0s deletes at once), or `forever` (None)."""
    if text.strip().lower() == "forever":
        return None
    value = parse_duration(text)
    if value < timedelta(0):
        raise ValueError(f"must be 0s or longer, or forever, not {text!r}")
    return value


RETENTION_VARIABLES = {
    Status.DONE: "VESPER_RETAIN_DONE",
    Status.CANCELLED: "VESPER_RETAIN_CANCELLED",
    Status.DLQ: "VESPER_RETAIN_DLQ",
}


def _positive_duration(text: str) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"must be longer than 0, not {text!r}")
    return value


class _Env:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if name in SECRET_VARIABLES else repr(raw)
            raise ConfigError(f"{name}={shown}: {exc}") from None
        except OverflowError:  # a duration beyond timedelta's range
            shown = "<hidden>" if name in SECRET_VARIABLES else repr(raw)
            raise ConfigError(f"{name}={shown}: out of range") from None


@attrs.frozen(kw_only=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    read_header_timeout: timedelta = timedelta(seconds=5)
    read_timeout: timedelta = timedelta(seconds=10)
    write_timeout: timedelta = timedelta(seconds=10)
    idle_timeout: timedelta = timedelta(seconds=60)
    max_header_bytes: int = 16 * 1024  # the request line and headers
    max_connections: int = 1024
    api_token: str | None = None
    metrics_auth: bool = False  # /metrics requires the token too
    ui: bool = True  # the dashboard at /ui (VESPER_UI=off turns it off)


@attrs.frozen(kw_only=True)
class Settings:
    storage: str
    database_url: str
    app_env: str = "development"
    require_consumer: bool = False
    auto_migrate: bool = True
    app_path: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    db_pool_size: int = 10
    db_max_overflow: int = 5
    event_loop: str = "auto"  # auto (uvloop where installed), asyncio or uvloop
    metrics_max_types: int = 100  # job types with a label of their own; the rest are "other"
    # where a worker-only process serves /metrics (VESPER_METRICS_ADDR); None: nowhere
    metrics_addr: tuple[str, int] | None = None
    # the OTEL_* variables: the tracer provider's own configuration (adapters/otel)
    otel: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    policies: Policies = Policies()
    worker: WorkerSettings = WorkerSettings()
    http: HttpSettings = HttpSettings()
    retention: Retention = Retention()  # VESPER_RETAIN_DONE, _CANCELLED, _DLQ

    @property
    def store_options(self) -> StoreOptions:
        """What the store factory gets of these settings."""
        return StoreOptions(
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            auto_migrate=self.auto_migrate,
        )

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def consumer_required(self) -> bool:
        return self.production or self.require_consumer

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        e = _Env(env)
        storage = env.get("VESPER_STORAGE") or _storage_of(env)
        if storage not in BUILTIN_STORAGES and storage not in storage_plugins():
            known = [*BUILTIN_STORAGES, *sorted(storage_plugins())]
            raise ConfigError(f"VESPER_STORAGE={storage!r}: expected one of {', '.join(known)}")
        app_env = e.get("APP_ENV", _app_env, "development")
        host, port = e.get("API_ADDR", parse_addr, ("0.0.0.0", 8080))
        lease = e.get("VESPER_LEASE", _positive_duration, timedelta(seconds=30))
        heartbeat = e.get("VESPER_HEARTBEAT", _positive_duration, timedelta(seconds=5))
        if heartbeat >= lease:
            raise ConfigError(
                f"VESPER_HEARTBEAT={heartbeat.total_seconds():g}s: must be shorter than "
                f"VESPER_LEASE ({lease.total_seconds():g}s), or leases expire while jobs run"
            )
        policies = Policies(
            lease=lease,
            heartbeat=heartbeat,
            dead_after=e.get("VESPER_DEAD_AFTER", _positive_duration, timedelta(seconds=30)),
            default_max_retries=e.get("VESPER_MAX_RETRIES", _non_negative_int, 3),
            backoff=Backoff(
                base=e.get("VESPER_RETRY_BASE", _positive_duration, timedelta(seconds=1)),
                cap=e.get("VESPER_RETRY_CAP", _positive_duration, timedelta(hours=1)),
                jitter=e.get("VESPER_RETRY_JITTER", parse_bool, True),
            ),
            limits=Limits(
                max_payload_bytes=e.get("VESPER_MAX_BODY", parse_size, 1024 * 1024),
                max_result_bytes=e.get("VESPER_MAX_RESULT", _positive_size, DEFAULT_MAX_RESULT),
            ),
        )
        queues = e.get("VESPER_QUEUES", parse_queue_slots, None)
        worker = WorkerSettings(
            concurrency=sum(queues.values()) if queues else e.get("WORKERS", _positive_int, 5),
            queues=queues,
            poll_interval=e.get("VESPER_POLL_INTERVAL", _positive_duration, timedelta(seconds=1)),
            shutdown_grace=e.get("VESPER_SHUTDOWN_GRACE", parse_duration, timedelta(seconds=30)),
            job_timeout=e.get("VESPER_JOB_TIMEOUT", _positive_duration, None),
            prune_interval=e.get("VESPER_PRUNE_INTERVAL", _positive_duration, timedelta(minutes=1)),
        )
        ages: dict[Status, timedelta | None] = {}
        for status, name in RETENTION_VARIABLES.items():
            default: timedelta | None = DEFAULT_AGES[status]
            ages[status] = e.get(name, _retention_age, default)
        retention = Retention(ages={s: a for s, a in ages.items() if a is not None})
        http = HttpSettings(
            host=host,
            port=port,
            read_header_timeout=e.get(
                "HTTP_READ_HEADER_TIMEOUT", parse_duration, timedelta(seconds=5)
            ),
            read_timeout=e.get("HTTP_READ_TIMEOUT", parse_duration, timedelta(seconds=10)),
            write_timeout=e.get("HTTP_WRITE_TIMEOUT", parse_duration, timedelta(seconds=10)),
            idle_timeout=e.get("HTTP_IDLE_TIMEOUT", parse_duration, timedelta(seconds=60)),
            max_header_bytes=e.get("VESPER_MAX_HEADER_BYTES", _positive_size, 16 * 1024),
            max_connections=e.get("VESPER_MAX_CONNECTIONS", _positive_int, 1024),
            api_token=env.get("VESPER_API_TOKEN") or None,
            metrics_auth=e.get("VESPER_METRICS_AUTH", parse_bool, False),
            ui=e.get("VESPER_UI", parse_bool, True),
        )
        if http.metrics_auth and not http.api_token:
            raise ConfigError(
                "VESPER_METRICS_AUTH=1: needs VESPER_API_TOKEN, the token /metrics would require"
            )
        production = app_env == "production"
        return cls(
            storage=storage,
            database_url=e.get("VESPER_DATABASE_URL", _database_url, None)
            or _default_url(storage, env),
            app_env=app_env,
            require_consumer=e.get("REQUIRE_CONSUMER", parse_bool, False),
            auto_migrate=e.get("VESPER_AUTO_MIGRATE", parse_bool, not production),
            app_path=env.get("VESPER_APP") or None,
            log_format=e.get("VESPER_LOG_FORMAT", _log_format, "json" if production else "text"),
            log_level=e.get("VESPER_LOG_LEVEL", _log_level, "INFO"),
            db_pool_size=e.get("VESPER_DB_POOL_SIZE", _positive_int, 10),
            db_max_overflow=e.get("VESPER_DB_MAX_OVERFLOW", _non_negative_int, 5),
            event_loop=e.get("VESPER_EVENT_LOOP", _event_loop, "auto"),
            metrics_max_types=e.get("VESPER_METRICS_MAX_TYPES", _non_negative_int, 100),
            metrics_addr=e.get("VESPER_METRICS_ADDR", parse_addr, None),
            otel={name: value for name, value in env.items() if name.startswith("OTEL_")},
            policies=policies,
            worker=worker,
            http=http,
            retention=retention,
        )


STORAGE_GROUP = "vesper.storage"


def storage_plugins() -> dict[str, EntryPoint]:
    """Installed third-party stores: entry points of the group `vesper.storage`."""
    return {ep.name: ep for ep in entry_points(group=STORAGE_GROUP)}


def load_storage_plugin(name: str) -> StoreFactory:
    """The factory `open_store(url, clock, options) -> Store` registered under `name`."""
    try:
        entry_point = storage_plugins()[name]
    except KeyError:
        raise ConfigError(
            f"VESPER_STORAGE={name!r}: no installed storage adapter has that name"
        ) from None
    factory: StoreFactory = entry_point.load()
    return factory


def _storage_of(env: Mapping[str, str]) -> str:
    """The store when VESPER_STORAGE is unset: VESPER_DATABASE_URL's scheme decides,
    else DB_HOST set means PostgreSQL, else SQLite."""
    url = env.get("VESPER_DATABASE_URL")
    if not url:
        return "postgres" if env.get("DB_HOST") else "sqlite"
    scheme = url.partition("://")[0].partition("+")[0].lower()  # postgresql+psycopg
    storage = _SCHEMES.get(scheme, scheme)
    if storage not in BUILTIN_STORAGES and storage not in storage_plugins():
        raise ConfigError(
            f"VESPER_DATABASE_URL=<hidden>: no store for the scheme {scheme!r} "
            "(use sqlite:///path.db or postgresql://..., or set VESPER_STORAGE)"
        )
    return storage


_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite"}


def describe_store(settings: Settings) -> str:
    """Which store this process uses and where, in one line for the start of every
    command: never a password; for PostgreSQL in production only the database's name
    (logs there carry no database address); for SQLite the file's absolute path."""
    storage = settings.storage
    if storage == "memory":
        return "store: memory (this process only)"
    if storage == "sqlite":
        path = settings.database_url.partition(":///")[2].partition("?")[0]
        # the absolute path: a relative one means another queue in another directory
        return f"store: sqlite {os.path.abspath(path)}"
    if storage != "postgres":
        return f"store: {storage} (a plugin)"  # its URL's parts mean what the plugin says
    parts = urlsplit(settings.database_url)
    name = unquote(parts.path.lstrip("/"))
    if settings.production:
        return f'store: postgres database "{name}"'
    return (
        f'store: postgres database "{name}" at {parts.hostname or "localhost"}:{parts.port or 5432}'
    )


def _app_env(text: str) -> str:
    if text not in {"development", "production"}:
        raise ValueError("expected development or production")
    return text


def _event_loop(text: str) -> str:
    choice = text.strip().lower()
    if choice not in {"auto", "asyncio", "uvloop"}:
        raise ValueError("must be auto, asyncio or uvloop")
    return choice


def _log_format(text: str) -> str:
    if text not in {"json", "text"}:
        raise ValueError("expected json or text")
    return text


def _database_url(text: str) -> str:
    # SQLAlchemy's parse error would surface as a traceback when the store opens
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text.strip()):
        raise ValueError("not a URL (e.g. postgresql+psycopg://user@host/db, sqlite:///q.db)")
    return text.strip()


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return level


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _default_url(storage: str, env: Mapping[str, str]) -> str:
    if storage == "postgres":
        user = quote(env.get("DB_USER") or "vesper", safe="")
        password = env.get("DB_PASSWORD")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host = env.get("DB_HOST") or "localhost"
        port = env.get("DB_PORT") or "5432"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"DB_PORT={port!r}: expected a port number (1-65535)")
        name = quote(env.get("DB_NAME") or "vesper", safe="")
        sslmode = env.get("DB_SSLMODE") or "disable"
        if sslmode not in SSL_MODES:  # libpq's error would read as the database being down
            raise ConfigError(f"DB_SSLMODE={sslmode!r}: expected one of {', '.join(SSL_MODES)}")
        # DB_TIMEZONE is accepted for compatibility: vesper stores and returns UTC.
        return f"postgresql+psycopg://{auth}@{host}:{port}/{name}?sslmode={sslmode}"
    if storage == "sqlite":
        return f"sqlite:///{env.get('DB_PATH') or DEFAULT_SQLITE_PATH}"
    return f"{storage}://"  # memory, or a plugin that needs no URL

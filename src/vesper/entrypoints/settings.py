"""Configuration from the environment, with the original service's variable names."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import attrs

from vesper.application.settings import QueueSettings

BUILTIN_STORAGES = ("memory", "sqlite", "postgres")
DEFAULT_SQLITE_PATH = "Vesper_sqlite.db"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@attrs.frozen(kw_only=True)
class Settings:
    storage: str
    database_url: str
    app_env: str = "development"
    auto_migrate: bool = True
    queue: QueueSettings = QueueSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        storage = env.get("VESPER_STORAGE") or ("postgres" if env.get("DB_HOST") else "sqlite")
        if storage not in BUILTIN_STORAGES:
            raise ConfigError(
                f"VESPER_STORAGE={storage!r}: expected one of {', '.join(BUILTIN_STORAGES)}"
            )
        url = env.get("VESPER_DATABASE_URL") or _default_url(storage, env)
        app_env = env.get("APP_ENV", "development") or "development"
        return cls(
            storage=storage,
            database_url=url,
            app_env=app_env,
            auto_migrate=app_env != "production",
        )


def _default_url(storage: str, env: Mapping[str, str]) -> str:
    if storage == "postgres":
        user = quote(env.get("DB_USER", "vesper"), safe="")
        password = env.get("DB_PASSWORD")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host = env.get("DB_HOST", "localhost")
        port = env.get("DB_PORT", "5432")
        name = env.get("DB_NAME", "vesper")
        sslmode = env.get("DB_SSLMODE", "disable")
        return f"postgresql+psycopg://{auth}@{host}:{port}/{name}?sslmode={sslmode}"
    if storage == "sqlite":
        return f"sqlite:///{env.get('DB_PATH', DEFAULT_SQLITE_PATH)}"
    return "memory://"

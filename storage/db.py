"""Opening the database: Tortoise set-up, migrations applied at start, clean close."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.exceptions import BaseORMException
from tortoise.migrations.api import migrate

log = logging.getLogger(__name__)

APP_LABEL = "models"


class DatabaseOpenError(Exception):
    """The database cannot be opened or migrated (the message says why, without credentials)."""


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": _durable(database_url)},
        "apps": {
            APP_LABEL: {
                "models": ["storage.models"],
                "migrations": "storage.migrations",
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def is_postgres(database_url: str) -> bool:
    """Whether the URL names a PostgreSQL database (each scheme Tortoise takes for one)."""
    return database_url.startswith(("postgres://", "postgresql://", "asyncpg://", "psycopg://"))


def is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite://")


def _durable(database_url: str) -> str:
    """On SQLite, every commit reaches the disk before it returns (`synchronous=FULL`): an
    outcome is stored before its callback is answered, and must survive a power loss. SQLite's
    default is FULL too, but a build may lower it; a URL that names its own `synchronous` keeps
    it (the operator's choice)."""
    if not is_sqlite(database_url) or "synchronous=" in database_url.partition("?")[2]:
        return database_url
    return database_url + ("&" if "?" in database_url else "?") + "synchronous=FULL"


#: For the `tortoise` CLI only (`tortoise makemigrations`), named in pyproject.toml.
MIGRATIONS_CONFIG = tortoise_config("sqlite://data/bot.sqlite3")


def _ensure_sqlite_dir(database_url: str) -> None:
    if not is_sqlite(database_url):
        return
    path = database_url.removeprefix("sqlite://").split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def open_database(database_url: str) -> AsyncIterator[None]:
    """Initialise Tortoise on `database_url`, apply pending migrations, close on exit.

    Tortoise keeps its state in a context variable: call this in the task that later creates
    the tasks using the database (they inherit the context).
    """
    config = tortoise_config(database_url)
    try:
        _ensure_sqlite_dir(database_url)
        # migrate() loads the apps without building query sets: initialise again for use.
        await migrate(config=config)
        await Tortoise.init(config=config)
    except (OSError, BaseORMException) as exc:
        await Tortoise.close_connections()
        raise DatabaseOpenError(f"{type(exc).__name__}: {exc}") from exc
    try:
        yield
    finally:
        await Tortoise.close_connections()


async def ping() -> bool:
    """True when the database answers a trivial query."""
    try:
        await connections.get("default").execute_query("SELECT 1")
    except Exception:
        log.exception("database ping failed")
        return False
    return True

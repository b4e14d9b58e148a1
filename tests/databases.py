"""The databases the storage suites run on: a SQLite file always, and PostgreSQL too when
`TEST_DATABASE_URL` names a server (`postgres://user@host:port/dbname`; .ci/run sets it to the
local one). The server's database in that URL is used only to create and drop databases.

Each test gets a fresh database of its own: a copy of a template that every migration was
applied to once per test process (an xdist worker has its own), so that a test does not spend
half a second migrating an empty database. On PostgreSQL it is a database made with that
template and dropped after the test; on SQLite, a copy of the file in the test's directory.

Where TEST_DATABASE_URL is unset or no server answers, the PostgreSQL runs are deselected, and
one test (tests/test_databases.py) is skipped with a line saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from simulators.soak import TaskRow, read_postgres_tasks
from simulators.soak import read_tasks as read_sqlite_tasks
from storage import open_database

ENV: Final = "TEST_DATABASE_URL"
SQLITE: Final = "sqlite"
POSTGRES: Final = "postgres"
#: Names of the databases made here start with this (and the xdist worker's name).
PREFIX: Final = "l2t_test"
SCHEMES: Final = ("postgres", "postgresql", "asyncpg")

T = TypeVar("T")
_numbers = itertools.count(1)


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on an event loop of its own, whatever loop is running here
    (pytest-asyncio's stays untouched; a sync fixture or check can wait for a database)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def server_url() -> str | None:
    return os.environ.get(ENV) or None


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def url_of(database: str) -> str:
    """The URL of `database` on the server of TEST_DATABASE_URL (its user, host, options)."""
    parts = urlsplit(_server())
    return urlunsplit(parts._replace(path=f"/{database}"))


def name_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _server() -> str:
    url = server_url()
    assert url is not None, f"{ENV} is not set"
    return url


def _for_asyncpg(url: str) -> str:
    """asyncpg takes postgres:// and postgresql://; Tortoise also knows asyncpg://."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


async def _admin(statement: str) -> None:
    """One statement in the database named in TEST_DATABASE_URL."""
    import asyncpg  # type: ignore[import-untyped,import-not-found,unused-ignore]

    conn = await asyncpg.connect(_for_asyncpg(_server()), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@functools.cache
def postgres_problem() -> str | None:
    """Why the PostgreSQL runs cannot happen here, or None when they do."""
    url = server_url()
    if url is None:
        return (
            f"POSTGRESQL NOT TESTED: {ENV} is not set, the [postgres] runs are"
            " deselected (.ci/run sets it to the local server)"
        )
    if urlsplit(url).scheme not in SCHEMES:
        return f"POSTGRESQL NOT TESTED: {ENV}={shown(url)} is not a postgres:// URL"
    try:
        in_thread(_admin("SELECT 1"))
    except Exception as exc:
        return (
            f"POSTGRESQL NOT REACHABLE at {shown(url)} ({type(exc).__name__}: {exc}):"
            " the [postgres] runs are deselected"
        )
    return None


def sqlite_url(directory: Path, name: str = "bot.sqlite3") -> str:
    """The bot's database as the simulators' settings have it: a file in `directory`."""
    return f"sqlite://{directory}/{name}"


def create_sqlite_template(directory: Path) -> Path:
    """A SQLite file with every migration applied, to copy."""
    path = directory / "template.sqlite3"
    in_thread(_migrate(sqlite_url(directory, path.name)))
    return path


def sqlite_database(template: Path, directory: Path) -> str:
    """A copy of `template` in `directory`; its URL."""
    shutil.copyfile(template, directory / "bot.sqlite3")
    return sqlite_url(directory)


def _new_name(what: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{PREFIX}_{worker}_{what}_{next(_numbers)}_{secrets.token_hex(3)}"


def create_database(template: str | None = None) -> str:
    """A new database on the server (a copy of `template`, or empty); its URL."""
    name = _new_name("db")
    clause = f' TEMPLATE "{template}"' if template else ""
    in_thread(_admin(f'CREATE DATABASE "{name}"{clause}'))
    return url_of(name)


def drop_database(url: str) -> None:
    """Drop it, whoever is still connected (a killed bot's connections may linger)."""
    in_thread(_admin(f'DROP DATABASE IF EXISTS "{name_of(url)}" WITH (FORCE)'))


def create_postgres_template() -> str:
    """A database with every migration applied, to clone; its name."""
    url = create_database()
    try:
        in_thread(_migrate(url))
    except BaseException:
        drop_database(url)
        raise
    return name_of(url)


async def _migrate(url: str) -> None:
    async with open_database(url):
        pass


@contextlib.contextmanager
def postgres_database(template: str | None) -> Iterator[str]:
    url = create_database(template)
    try:
        yield url
    finally:
        drop_database(url)


# --- reading the tasks table from outside the bot (the crash tests' bot is a subprocess) ----


def read_tasks(database_url: str) -> list[TaskRow]:
    """Every row of `tasks`, ordered by id; empty before the first start has migrated."""
    if database_url.startswith("sqlite://"):
        return read_sqlite_tasks(Path(database_url.removeprefix("sqlite://")))
    return in_thread(read_postgres_tasks(_for_asyncpg(database_url)))

"""The databases the storage suites run on: a SQLite file always, and PostgreSQL too when
`TEST_DATABASE_URL` names a server (`postgres://user@host:port/dbname`; .ci/run sets it to the
local one). The server's database in that URL is used only to create and drop databases.

Each test gets a fresh database of its own: a copy of a template that every migration was
applied to once per test process (an xdist worker has its own), so that a test does not spend
half a second migrating an empty database. On SQLite it is a copy of the file in the test's
directory. On PostgreSQL it is a database made with that template, which after the test is
not dropped but emptied and handed to the next test: DROP DATABASE makes the server write a
checkpoint (a tenth of a second, far more while other tests write) and a new copy takes it a
few tenths more. Emptying it (`_emptied`, some hundredths of a second, begun in the
background as the test ends) closes every connection left on it (a killed bot's, with their
locks), checks that its schema and migrations are still the template's (if not, it is
dropped and a new copy made instead), and truncates every table but the migrations',
restarting their sequences: the next test gets what a new copy would be.

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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
#: Where copies given back are emptied (or dropped), in the background, one at a time.
_background = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
#: The copies of each template given back: emptied, or being emptied, for the next test.
_free: dict[str, list[Future[str]]] = {}
#: What each template's schema and migrations are (`_fingerprint`).
_fingerprints: dict[str, str] = {}
#: Drops not yet known to be done.
_drops: list[Future[None]] = []


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


def drop_template(name: str) -> None:
    """Drop a template made by `create_postgres_template`, and every copy of it given back."""
    for copy in _free.pop(name, ()):
        _drops.append(_background.submit(drop_database, copy.result()))
    wait_for_drops()
    _fingerprints.pop(name, None)
    drop_database(url_of(name))


def wait_for_drops() -> None:
    """Wait until the databases given back so far to be dropped are (an error is raised here)."""
    while _drops:
        _drops.pop(0).result()


def create_postgres_template() -> str:
    """A database with every migration applied, to clone; its name."""
    url = create_database()
    try:
        in_thread(_migrate(url))
        _fingerprints[name_of(url)] = in_thread(_on(url, _fingerprint))
    except BaseException:
        drop_database(url)
        raise
    return name_of(url)


async def _migrate(url: str) -> None:
    async with open_database(url):
        pass


@contextlib.contextmanager
def postgres_database(template: str | None) -> Iterator[str]:
    """A database of the test's own: a copy of `template` (one given back by an earlier test
    and emptied, or a new one), or a new empty one (dropped in the background after)."""
    if template is None:
        url = create_database()
        try:
            yield url
        finally:
            _drops.append(_background.submit(drop_database, url))
        return
    free = _free.setdefault(template, [])
    url = free.pop(0).result() if free else create_database(template)
    try:
        yield url
    finally:
        free.append(_background.submit(_emptied, url, template))


def _emptied(url: str, template: str) -> str:
    """`url`, a copy of `template` given back, made what a new copy would be; or, if it cannot
    be (its schema changed, say), dropped, and a new copy's URL."""
    try:
        if in_thread(_on(url, _empty)) == _fingerprints[template]:
            return url
    except Exception:
        pass
    drop_database(url)
    return create_database(template)


async def _on(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work` done on a connection of its own to the database `url`."""
    import asyncpg  # type: ignore[import-untyped,import-not-found,unused-ignore]

    conn = await asyncpg.connect(_for_asyncpg(url), timeout=5)
    try:
        return await work(conn)
    finally:
        await conn.close()


_OTHERS = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


async def _empty(conn: Any) -> str:
    """Close every other connection to this database (a killed bot's may linger, holding its
    locks), truncate every table but the migrations', restarting their sequences; the
    database's fingerprint."""
    async with asyncio.timeout(10):
        while await conn.fetchval(f"SELECT count(*) {_OTHERS}"):
            await conn.execute(f"SELECT pg_terminate_backend(pid) {_OTHERS}")
            await asyncio.sleep(0.01)
    tables = await conn.fetch(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
        " WHERE schemaname = 'public' AND tablename <> 'tortoise_migrations'"
    )
    await conn.execute(f"TRUNCATE {', '.join(t[0] for t in tables)} RESTART IDENTITY CASCADE")
    return await _fingerprint(conn)


async def _fingerprint(conn: Any) -> str:
    """The schema of the database (its relations, their columns, constraints, indexes,
    triggers and functions) and the migrations applied, with the next value of each
    sequence, in one string."""
    return str(
        await conn.fetchval(
            """
            SELECT concat_ws(' | ',
              (SELECT string_agg(format('%s %s %s %s', c.relname, c.relkind, a.attname,
                                        format_type(a.atttypid, a.atttypmod)), ', '
                                 ORDER BY c.relname, a.attnum)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                                        AND NOT a.attisdropped
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
              (SELECT string_agg(pg_get_constraintdef(oid), ', ' ORDER BY conname)
               FROM pg_constraint WHERE connamespace = 'public'::regnamespace),
              (SELECT string_agg(indexdef, ', ' ORDER BY indexname)
               FROM pg_indexes WHERE schemaname = 'public'),
              (SELECT string_agg(tgname, ', ' ORDER BY tgname)
               FROM pg_trigger WHERE NOT tgisinternal),
              (SELECT string_agg(proname, ', ' ORDER BY proname)
               FROM pg_proc WHERE pronamespace = 'public'::regnamespace),
              (SELECT string_agg(format('%s %s', app, name), ', ' ORDER BY id)
               FROM tortoise_migrations),
              (SELECT string_agg(format('%s %s', sequencename, last_value), ', '
                                 ORDER BY sequencename)
               FROM pg_sequences WHERE schemaname = 'public'
                 AND sequencename <> 'tortoise_migrations_id_seq'))
            """
        )
    )


# --- reading the tasks table from outside the bot (the crash tests' bot is a subprocess) ----


def read_tasks(database_url: str) -> list[TaskRow]:
    """Every row of `tasks`, ordered by id; empty before the first start has migrated."""
    if database_url.startswith("sqlite://"):
        return read_sqlite_tasks(Path(database_url.removeprefix("sqlite://")))
    return in_thread(read_postgres_tasks(_for_asyncpg(database_url)))

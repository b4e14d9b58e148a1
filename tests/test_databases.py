"""Whether the storage suites run on PostgreSQL too (tests/databases.py): when they cannot,
this is the one test skipped, and its line in the summary says why."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests import databases


def test_the_storage_suites_run_on_postgresql_too() -> None:
    problem = databases.postgres_problem()
    if problem:
        pytest.skip(problem)
    # What each [postgres] test gets: a database of its own, cloned from a migrated one.
    template = databases.create_postgres_template()
    try:
        with (
            databases.postgres_database(template) as one,
            databases.postgres_database(template) as other,
        ):
            assert databases.name_of(one) != databases.name_of(other)
            assert databases.read_tasks(one) == []  # the tables are there, empty
    finally:
        databases.drop_template(template)
    for name in (one, other):
        with pytest.raises(Exception, match="does not exist"):
            databases.read_tasks(name)


# A copy given back is emptied and used again (tests/databases.py): [postgres] runs alone,
# deselected without a server.


@pytest.fixture
def template(database_kind: str, postgres_template: str) -> str:
    assert database_kind == databases.POSTGRES
    return postgres_template


LOCK = 4242


class Lingering(threading.Thread):
    """A connection left open on a database, as a killed bot's may be: it has stored a row, holds
    an advisory lock and waits; the thread ends when the server closes its connection."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ready = threading.Event()
        self.closed = threading.Event()

    def run(self) -> None:
        asyncio.run(self._linger())

    async def _linger(self) -> None:
        async def work(conn: Any) -> None:
            await conn.execute("INSERT INTO runs_spent (user_id, spent_at) VALUES (7, now())")
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
            self.ready.set()
            try:
                await conn.execute("SELECT pg_sleep(30)")
            except Exception:
                self.closed.set()

        try:
            await databases._on(self.url, work)
        except Exception:
            self.closed.set()


async def _after_reuse(conn: Any) -> tuple[int, int, bool]:
    rows = await conn.fetchval("SELECT count(*) FROM runs_spent")
    new_id = await conn.fetchval(
        "INSERT INTO runs_spent (user_id, spent_at) VALUES (8, now()) RETURNING id"
    )
    locked = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
    return rows, new_id, locked


@pytest.mark.postgres_only
def test_a_database_given_back_is_emptied_for_the_next_test_as_a_new_copy(template: str) -> None:
    used = databases.create_database(template)
    try:
        lingering = Lingering(used)
        lingering.start()
        assert lingering.ready.wait(10)
        # What the next test gets: the same database, the connection left on it closed (its
        # lock gone), its tables empty, their ids starting again at 1.
        assert databases._emptied(used, template) == used
        assert lingering.closed.wait(10)
        assert databases.in_thread(databases._on(used, _after_reuse)) == (0, 1, True)
    finally:
        databases.drop_database(used)


async def _change_schema(conn: Any) -> None:
    await conn.execute("ALTER TABLE runs_spent ADD COLUMN extra integer")


@pytest.mark.postgres_only
def test_a_database_whose_schema_a_test_changed_is_dropped_not_handed_out(template: str) -> None:
    changed = databases.create_database(template)
    databases.in_thread(databases._on(changed, _change_schema))
    instead = databases._emptied(changed, template)
    try:
        assert instead != changed
        assert databases.read_tasks(instead) == []
        with pytest.raises(Exception, match="does not exist"):
            databases.read_tasks(changed)
    finally:
        databases.drop_database(instead)

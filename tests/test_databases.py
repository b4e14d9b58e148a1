"""Whether the storage suites run on PostgreSQL too (tests/databases.py): when they cannot,
this is the one test skipped, and its line in the summary says why."""

from __future__ import annotations

import pytest

from tests import databases


def test_the_storage_suites_run_on_postgresql_too() -> None:
    problem = databases.postgres_problem()
    if problem:
        pytest.skip(problem)
    # What each [postgres] test gets: a database of its own, cloned from a migrated one,
    # gone after the test.
    template = databases.create_postgres_template()
    try:
        with (
            databases.postgres_database(template) as one,
            databases.postgres_database(template) as other,
        ):
            assert databases.name_of(one) != databases.name_of(other)
            assert databases.read_tasks(one) == []  # the tables are there, empty
        with pytest.raises(Exception, match="does not exist"):
            databases.read_tasks(one)
    finally:
        databases.drop_database(databases.url_of(template))

"""SQLite commits reach the disk before they return: what is acknowledged survives power loss.

SQLite's compiled-in default is FULL on most builds (this machine's included), so the database
is asked for it explicitly, and that request is what the first test checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tortoise import connections

from storage import open_database
from storage.db import tortoise_config


def _url_opened(database_url: str) -> str:
    return str(tortoise_config(database_url)["connections"]["default"])


def test_sqlite_is_asked_for_synchronous_full_unless_the_url_says_otherwise() -> None:
    assert _url_opened("sqlite://data/bot.sqlite3") == "sqlite://data/bot.sqlite3?synchronous=FULL"
    assert _url_opened("sqlite://x.db?journal_size_limit=1") == (
        "sqlite://x.db?journal_size_limit=1&synchronous=FULL"
    )
    assert _url_opened("sqlite://x.db?synchronous=NORMAL") == "sqlite://x.db?synchronous=NORMAL"
    assert _url_opened("postgres://u@h/db") == "postgres://u@h/db"


async def _synchronous(url: str) -> int:
    async with open_database(url):
        _, rows = await connections.get("default").execute_query("PRAGMA synchronous")
        return int(rows[0][0])


@pytest.mark.asyncio
async def test_the_connection_runs_with_the_synchronous_setting_asked_for(tmp_path: Path) -> None:
    assert await _synchronous(f"sqlite://{tmp_path}/a.sqlite3") == 2  # FULL
    assert await _synchronous(f"sqlite://{tmp_path}/b.sqlite3?synchronous=NORMAL") == 1

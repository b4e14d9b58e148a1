"""SQL written once, for the statements run on every callback and every delivered text.

Tortoise builds a query's SQL anew each time it runs (a query set, then pypika's builder):
on the callback path that cost more than the database's own work. The statements here are
plain parameterised SQL, turned into each database's placeholders once (SQLite `?`, asyncpg
`$1`), and run on Tortoise's connection: `connections.get("default")`, which inside
`in_transaction()` is the transaction's own.

Values are passed as the database stores them: datetimes aware (Tortoise's own adapter writes
them to SQLite as ISO text, as its query sets do), enums by their value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

_PLACEHOLDER = re.compile(r"\?")


class Prebuilt:
    """One statement, written with `?` placeholders (and no literal question mark)."""

    def __init__(self, sql: str) -> None:
        self.sql = " ".join(sql.split())
        self._numbered = _numbered(self.sql)

    def text_for(self, client: BaseDBAsyncClient) -> str:
        return self.sql if client.capabilities.dialect == "sqlite" else self._numbered

    async def rows(self, values: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows the statement returns (a SELECT, or a write with RETURNING)."""
        client = connections.get("default")
        rows: list[dict[str, Any]] = await client.execute_query_dict(
            self.text_for(client), list(values)
        )
        return rows

    async def count(self, values: Sequence[Any]) -> int:
        """The rows a write changed (no RETURNING)."""
        client = connections.get("default")
        changed, _ = await client.execute_query(self.text_for(client), list(values))
        return int(changed)


def _numbered(sql: str) -> str:
    numbers = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list of `count` values (numbered for PostgreSQL by Prebuilt)."""
    return ", ".join("?" * count)

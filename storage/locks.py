"""A PostgreSQL advisory lock, held on a connection of its own for as long as it is held.

Session-level advisory locks belong to a connection: the server lets go of the lock the moment
that connection ends, so when the process holding it dies (or its network does), another one
can take it at once. The pool that Tortoise keeps could hand that connection to any query, so
the lock gets a connection of its own. Advisory locks are per database: bots on other databases
of the same server never contend.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0


def libpq_url(database_url: str) -> str:
    """The database URL as asyncpg takes it: the postgresql scheme, no Tortoise options."""
    parts = urlsplit(database_url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, "", ""))


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for the lock's name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLock:
    def __init__(self, database_url: str, name: str) -> None:
        self._url = libpq_url(database_url)
        self._key = lock_key(name)
        self._connection: Any = None
        self.held = False

    async def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False otherwise (or when the server is away)."""
        try:
            if self._connection is None or self._connection.is_closed():
                import asyncpg  # type: ignore[import-untyped,import-not-found,unused-ignore]

                self._connection = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_SECONDS)
            self.held = bool(
                await self._connection.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
            )
        except Exception as exc:
            log.warning("advisory lock: the database did not answer (%s)", type(exc).__name__)
            await self._drop()
        return self.held

    async def still_held(self) -> bool:
        """Whether the lock's connection is alive (if it is not, the server let the lock go)."""
        if not self.held:
            return False
        try:
            await self._connection.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("advisory lock: its connection failed (%s)", type(exc).__name__)
            await self._drop()
        return self.held

    async def release(self) -> None:
        if self._connection is not None and self.held:
            try:
                await self._connection.fetchval("SELECT pg_advisory_unlock($1)", self._key)
            except Exception as exc:  # closing the connection lets it go anyway
                log.warning("advisory lock: could not unlock (%s)", type(exc).__name__)
        await self._drop()

    async def _drop(self) -> None:
        self.held = False
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=CONNECT_TIMEOUT_SECONDS)
            except Exception:
                connection.terminate()

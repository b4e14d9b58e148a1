"""Who may use the bot: admins, blocked users, and (when set) the only users allowed.

The config's lists are the starting point; /block and /unblock by an admin are kept in the
database and win over the config for that user. The lists are held in memory, since every
update is screened against them before anything else happens, and read again every few
seconds (`keep_loaded`): an admin's /block may reach another instance on the same database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from storage import repository

log = logging.getLogger(__name__)

#: Seconds between two reads of the admins' changes.
RELOAD_SECONDS = 10.0


class AccessList:
    def __init__(
        self,
        *,
        admins: Iterable[int] = (),
        blocked: Iterable[int] = (),
        allowed: Iterable[int] = (),
    ) -> None:
        self._admins = frozenset(admins)
        self._configured_blocked = frozenset(blocked)
        self._allowed = frozenset(allowed)
        self._blocked = set(self._configured_blocked)

    async def load(self) -> None:
        """Apply the admins' changes stored in the database over the config's list."""
        blocked = set(self._configured_blocked)
        for user_id, is_blocked in await repository.access_changes():
            if is_blocked:
                blocked.add(user_id)
            else:
                blocked.discard(user_id)
        self._blocked = blocked

    async def keep_loaded(self, interval: float = RELOAD_SECONDS) -> None:
        """Read the admins' changes again every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load()
            except Exception as exc:  # the lists as last read stay in force
                log.warning("could not read the access changes: %s", type(exc).__name__)

    def is_admin(self, user_id: int) -> bool:
        return user_id in self._admins

    def is_blocked(self, user_id: int) -> bool:
        """Blocked users are ignored entirely; an admin is never blocked."""
        return user_id in self._blocked and user_id not in self._admins

    def is_allowed(self, user_id: int) -> bool:
        """With an allow-list, only its users and the admins may use the bot."""
        return not self._allowed or user_id in self._allowed or user_id in self._admins

    async def block(self, user_id: int, *, by: int) -> bool:
        """Block a user (stored first); False if they were blocked already or are an admin."""
        if self.is_admin(user_id):
            return False
        was_blocked = user_id in self._blocked
        await repository.set_blocked(user_id, blocked=True, changed_by=by)
        self._blocked.add(user_id)
        return not was_blocked

    async def unblock(self, user_id: int, *, by: int) -> bool:
        """Unblock a user (stored first); False if they were not blocked."""
        was_blocked = user_id in self._blocked
        await repository.set_blocked(user_id, blocked=False, changed_by=by)
        self._blocked.discard(user_id)
        return was_blocked

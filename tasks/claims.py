"""This instance's claims on shared work, and the heartbeat that keeps them alive.

Whoever takes a claim (storage.claims: a run to start or check, a chat to deliver to, a stored
update to handle) records it here while it works, and lets it go when done. Every third of a
lease the heartbeat renews all of them in three statements, so a claim outlives its lease only
while this instance is alive and working on it; when the instance dies its claims run out and
the other instances take the work over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from storage import claims
from storage.claims import LOCAL, Lease

log = logging.getLogger(__name__)


class Claims:
    def __init__(self, lease: Lease = LOCAL) -> None:
        self.lease = lease
        self.tasks: set[int] = set()  # runs being started or checked
        self.chats: set[int] = set()  # chats being delivered to
        self.updates: set[int] = set()  # stored updates queued or being handled
        self._stopping = asyncio.Event()

    def held(self) -> dict[str, int]:
        """How many claims this instance holds, by kind (for /metrics)."""
        return {"task": len(self.tasks), "chat": len(self.chats), "update": len(self.updates)}

    async def renew(self) -> None:
        # Copies: the sets change while the statements run.
        await claims.renew_tasks(set(self.tasks), self.lease)
        await claims.renew_chats(set(self.chats), self.lease)
        await claims.renew_updates(set(self.updates), self.lease)

    async def run(self) -> None:
        """Renew the claims held every third of a lease until stopped."""
        interval = self.lease.seconds / 3
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                break
            try:
                await self.renew()
            except Exception as exc:
                # Past the lease another instance may take this work over: a late step of it
                # here is still harmless (every state change is conditional), at worst a
                # message sent twice.
                log.warning("could not renew this instance's claims: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stopping.set()

    async def release_all(self) -> None:
        """At a clean stop: everything this instance held is free for the others at once."""
        try:
            await claims.release_all(self.lease)
        except Exception as exc:
            log.warning("could not release this instance's claims: %s", type(exc).__name__)

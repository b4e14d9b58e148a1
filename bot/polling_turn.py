"""Only one instance polls Telegram at a time; another takes over when it dies.

getUpdates serves one caller: a second long poll makes Telegram answer 409 Conflict, and the
two would take updates from each other. With several instances on PostgreSQL, the one that
holds an advisory lock polls; the others wait, trying for the lock every few seconds. The lock
belongs to the poller's own database connection, so it is free the moment that instance dies
(its connection ends), and the next one to try takes it over. The others still serve
callbacks, deliver, and handle updates a dead poller stored but did not handle.
"""

from __future__ import annotations

import asyncio
import logging

from bot.polling import Poller
from storage.locks import AdvisoryLock

log = logging.getLogger(__name__)

LOCK_NAME = "link2text:telegram-polling"


class PollingTurn:
    def __init__(self, poller: Poller, lock: AdvisoryLock, *, check_seconds: float) -> None:
        self._poller = poller
        self._lock = lock
        self._check_seconds = check_seconds
        self.polling = False

    async def run(self) -> None:
        """Until cancelled: poll while this instance holds the lock, else wait for it."""
        waiting_said = False
        try:
            while True:
                try:
                    if await self._lock.try_acquire():
                        await self._poll_while_held()
                        waiting_said = False
                    elif not waiting_said:
                        log.info("another instance is polling Telegram; standing by")
                        waiting_said = True
                except Exception:
                    log.exception("polling failed to start; letting another instance try")
                    await self._lock.release()
                await asyncio.sleep(self._check_seconds)
        finally:
            await self._stop_polling()
            await self._lock.release()

    async def _poll_while_held(self) -> None:
        log.info("this instance polls Telegram now")
        await self._poller.start()
        self.polling = True
        try:
            # A poll on the lock's connection: its failure means the server let the lock go.
            while await self._lock.still_held():  # noqa: ASYNC110
                await asyncio.sleep(self._check_seconds)
        finally:
            await self._stop_polling()
        log.warning("lost the polling lock (its database connection ended); stopped polling")

    async def _stop_polling(self) -> None:
        if self.polling:
            self.polling = False
            await self._poller.stop()

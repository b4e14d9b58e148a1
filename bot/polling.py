"""Long polling that stores each update before Telegram forgets it.

PTB's Updater confirms an update (the next getUpdates offset) as soon as it has queued it; an
update queued but not yet handled when the process dies would be gone. This poller stores
each batch in the inbox first, and the update processor marks each update handled after its
handler has run. At start, what was stored but not handled is handled first, and polling
resumes after the newest stored update.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from telegram import Update
from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Application

from tasks import Inbox

log = logging.getLogger(__name__)

MAX_PAUSE_SECONDS = 30.0


class Poller:
    def __init__(
        self,
        application: Application,  # type: ignore[type-arg]
        inbox: Inbox,
        *,
        timeout: int,
        allowed_updates: list[str],
    ) -> None:
        self._application = application
        self._inbox = inbox
        self._timeout = timeout
        self._allowed_updates = allowed_updates
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Queue the updates left unhandled, then poll in the background; the number replayed."""
        bot = self._application.bot
        # As PTB's Updater does: polling and a webhook exclude each other.
        await bot.delete_webhook(drop_pending_updates=False)
        replayed = 0
        for stored in await self._inbox.unhandled():
            update = Update.de_json(json.loads(stored.payload), bot)
            await self._application.update_queue.put(update)
            replayed += 1
        if replayed:
            log.info("handling %d update(s) left unhandled by the last run", replayed)
        offset = await self._inbox.next_offset()
        self._task = asyncio.create_task(self._poll(offset), name="telegram-polling")
        return replayed

    async def stop(self) -> None:
        """Stop fetching. An update fetched but not stored is sent again by Telegram later."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _poll(self, offset: int | None) -> None:
        bot = self._application.bot
        pause = 1.0
        while True:
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=self._timeout, allowed_updates=self._allowed_updates
                )
            except TimedOut:
                continue  # a long poll that outlived its connection: ask again
            except (Conflict, InvalidToken) as exc:
                log.error("getUpdates refused: %s (another poller, or the token?)", exc.message)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)
                continue
            except (NetworkError, TelegramError) as exc:
                log.warning("getUpdates failed (%s); trying again in %.0f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)
                continue
            pause = 1.0
            if not updates:
                continue
            # Stored before the next call's offset tells Telegram it may forget them.
            await self._store(updates)
            for update in updates:
                await self._application.update_queue.put(update)
            offset = updates[-1].update_id + 1

    async def _store(self, updates: list[Update]) -> None:
        pause = 1.0
        while True:
            try:
                await self._inbox.store([(u.update_id, _to_json(u)) for u in updates])
                return
            except Exception:
                # Not confirmed to Telegram yet, so nothing is lost while the database is away;
                # keep trying rather than handle what could not be kept.
                log.exception("could not store %d update(s); trying again", len(updates))
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)


def _to_json(update: Update) -> str:
    data: dict[str, Any] = update.to_dict()
    return json.dumps(data, ensure_ascii=False)

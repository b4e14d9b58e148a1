"""Long polling that stores each update, as Telegram sent it, before Telegram forgets it.

PTB's Updater confirms an update (the next getUpdates offset) as soon as it has queued it; an
update queued but not yet handled when the process dies would be gone. This poller stores
each batch in the inbox first, and the update processor marks each update handled after its
handler has run. At start, what was stored but not handled is handled first, and polling
resumes after the newest stored update.

Updates are fetched and stored as raw JSON, and only then read into PTB objects, one by one:
an update that cannot be stored or read (Telegram adds fields and types; PTB cannot always
round-trip what it parsed) is set aside as poisoned, logged once by id and type, and skipped.
One bad update never stops polling for everyone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Application

from bot.inbound import Inbound, as_json
from tasks import Inbox
from tasks.metrics import Metrics

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
        read_timeout: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._application = application
        self._inbox = inbox
        self._inbound = Inbound(application, inbox, metrics)
        self._timeout = timeout
        self._allowed_updates = allowed_updates
        self._read_timeout = read_timeout
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Queue the updates left unhandled, then poll in the background; the number replayed."""
        bot = self._application.bot
        # As PTB's Updater does: polling and a webhook exclude each other.
        await bot.delete_webhook(drop_pending_updates=False)
        replayed = await self._inbound.replay()
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
        pause = 1.0
        while True:
            try:
                batch = await self._get_updates(offset)
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
            if not batch:
                continue
            # Stored before the next call's offset tells Telegram it may forget them.
            self._inbound.polled(len(batch))
            not_ours = await self._inbound.store(batch, keep_trying=True)
            for update_id, payload in batch:
                if update_id not in not_ours:
                    await self._inbound.queue(update_id, payload)
            offset = max(update_id for update_id, _ in batch) + 1

    async def _get_updates(self, offset: int | None) -> list[tuple[int, str]]:
        """One long poll: (update_id, JSON as Telegram sent it) for each update."""
        bot = self._application.bot
        # Bot.get_updates would parse the batch into Update objects in one go (one update it
        # cannot parse fails them all, and PTB then logs the whole batch, users' messages
        # included). The raw call is what Bot.get_updates itself makes.
        result: Any = await bot._post(
            "getUpdates",
            {
                "offset": offset,
                "timeout": self._timeout,
                "allowed_updates": self._allowed_updates,
            },
            read_timeout=self._read_timeout + self._timeout,
        )
        batch: list[tuple[int, str]] = []
        for raw in result if isinstance(result, list) else []:
            update_id = raw.get("update_id") if isinstance(raw, dict) else None
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                log.error("getUpdates returned an item without an update id; skipped")
                continue
            batch.append((update_id, as_json(raw)))
        return batch

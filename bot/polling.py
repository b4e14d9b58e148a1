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
        read_timeout: float = 10.0,
    ) -> None:
        self._application = application
        self._inbox = inbox
        self._timeout = timeout
        self._allowed_updates = allowed_updates
        self._read_timeout = read_timeout
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Queue the updates left unhandled, then poll in the background; the number replayed."""
        bot = self._application.bot
        # As PTB's Updater does: polling and a webhook exclude each other.
        await bot.delete_webhook(drop_pending_updates=False)
        replayed = 0
        for stored in await self._inbox.unhandled():
            if await self._queue(stored.update_id, stored.payload):
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
            set_aside = await self._store(batch)
            for update_id, payload in batch:
                if update_id not in set_aside:
                    await self._queue(update_id, payload)
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
            batch.append((update_id, _as_json(raw)))
        return batch

    async def _store(self, batch: list[tuple[int, str]]) -> set[int]:
        """Store the batch; the ids of updates the database refused (set aside, not handled)."""
        pause = 1.0
        while True:
            try:
                await self._inbox.store(batch)
                return set()
            except Exception as exc:
                # Not confirmed to Telegram yet, so nothing is lost while the database is away;
                # keep trying rather than handle what could not be kept. One update the
                # database refuses must not hold up the rest: each is then stored alone.
                log.error(
                    "could not store %d update(s) (%s); storing them one by one",
                    len(batch),
                    type(exc).__name__,
                )
                refused = await self._store_each(batch)
                if refused is not None:
                    return refused
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)

    async def _store_each(self, batch: list[tuple[int, str]]) -> set[int] | None:
        """Store the updates one at a time, setting aside any the database refuses; the ids
        set aside, or None when the database itself seems to be away."""
        refused: set[int] = set()
        for update_id, payload in batch:
            try:
                await self._inbox.store([(update_id, payload)])
            except Exception:
                refused.add(update_id)
        for update_id, payload in batch:
            if update_id not in refused:
                continue
            kind = _kind_of(payload)
            try:
                await self._inbox.set_aside(update_id, kind)
            except Exception:
                return None  # not even a placeholder could be stored: the database is away
            log.error("update %d (%s) cannot be stored; set aside as poisoned", update_id, kind)
        return refused

    async def _queue(self, update_id: int, payload: str) -> bool:
        """Read one stored update and hand it to the processor; a poisoned one is set aside."""
        try:
            update = Update.de_json(json.loads(payload), self._application.bot)
        except Exception as exc:
            kind = _kind_of(payload)
            log.error(
                "update %d (%s) cannot be read (%s); set aside as poisoned",
                update_id,
                kind,
                type(exc).__name__,
            )
            await self._inbox.set_aside(update_id, kind)
            return False
        await self._application.update_queue.put(update)
        return True


def _as_json(raw: dict[str, Any]) -> str:
    text = json.dumps(raw, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from a \\ud83d escape: keep it escaped, which any database can hold.
        return json.dumps(raw)
    return text


def _kind_of(payload: str) -> str:
    """The update's type (message, callback_query, ...) for a log line: never its content."""
    try:
        raw = json.loads(payload)
    except ValueError:
        return "unreadable"
    if not isinstance(raw, dict):
        return "unreadable"
    kinds = [key for key in raw if key != "update_id"]
    return kinds[0][:40] if kinds else "empty"

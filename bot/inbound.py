"""Updates from Telegram, however they arrive (long polling, or the webhook): stored in the
inbox as Telegram sent them, then read into PTB objects one by one and handed to the
application. An update that cannot be stored or read is set aside as poisoned, logged once by
id and type, and skipped: one bad update never stops the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from telegram import Update
from telegram.ext import Application

from tasks import Inbox
from tasks.metrics import Metrics

log = logging.getLogger(__name__)

MAX_PAUSE_SECONDS = 30.0


class Inbound:
    def __init__(
        self,
        application: Application,  # type: ignore[type-arg]
        inbox: Inbox,
        metrics: Metrics | None = None,
    ) -> None:
        self._application = application
        self._inbox = inbox
        self._metrics = metrics or Metrics()

    async def replay(self) -> int:
        """Queue the updates stored but left unhandled by the last run of this instance, or
        by another instance that died or stopped; how many."""
        replayed = 0
        for stored in await self._inbox.unhandled():
            if await self.queue(stored.update_id, stored.payload):
                replayed += 1
        if replayed:
            log.info("handling %d update(s) left unhandled by a stopped instance", replayed)
        return replayed

    async def keep_replaying(self, interval: float) -> None:
        """Look for updates left by a dead instance every `interval` seconds (until
        cancelled): its claims run out, and this instance takes them over."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.replay()
            except Exception as exc:
                log.warning("could not look for unhandled updates: %s", type(exc).__name__)

    async def receive(self, update: dict[str, Any]) -> None:
        """One update pushed to the webhook: stored (raises if it cannot be), then handled in
        the background; one stored before (Telegram sending it again) is not handled twice."""
        update_id = int(update["update_id"])
        self._metrics.update_received("webhook")
        if await self._inbox.is_stored(update_id):
            return
        payload = as_json(update)
        if update_id not in await self.store([(update_id, payload)], keep_trying=False):
            await self.queue(update_id, payload)

    def polled(self, count: int) -> None:
        for _ in range(count):
            self._metrics.update_received("polling")

    async def store(self, batch: list[tuple[int, str]], *, keep_trying: bool) -> set[int]:
        """Store the batch; the ids of updates not to handle here: those the database refused
        (set aside) and those another instance stored first (it handles them).

        While the database is away: `keep_trying` waits and tries again (polling: nothing is
        confirmed to Telegram meanwhile); otherwise the error is raised (a webhook request:
        Telegram gets a 5xx and sends the update again).
        """
        pause = 1.0
        while True:
            try:
                stored = await self._inbox.store(batch)
                return {update_id for update_id, _ in batch} - stored
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
                if not keep_trying:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)

    async def _store_each(self, batch: list[tuple[int, str]]) -> set[int] | None:
        """Store the updates one at a time, setting aside any the database refuses; the ids
        set aside, or None when the database itself seems to be away."""
        refused: set[int] = set()
        elsewhere: set[int] = set()
        for update_id, payload in batch:
            try:
                if not await self._inbox.store([(update_id, payload)]):
                    # Another instance stored it first (the batch may have failed on just
                    # that: Telegram sent it again while the first request was under way).
                    elsewhere.add(update_id)
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
        return refused | elsewhere

    async def queue(self, update_id: int, payload: str) -> bool:
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
        self._inbox.handling(update_id)
        await self._application.update_queue.put(update)
        return True


def as_json(raw: dict[str, Any]) -> str:
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

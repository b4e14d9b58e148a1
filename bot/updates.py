"""Update processing: different chats concurrently, one chat's updates in order.

Each update is screened first (bot.intake): what is dropped never waits for anything. The
chat's turn is taken before one of the `max_concurrent_updates` slots, so a user with a
hundred messages queued holds one slot, not all of them. A handler that hangs is stopped
after `handling_timeout` and its update set aside as poisoned: it never holds its chat forever.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from bot.intake import Intake, Screening

log = logging.getLogger(__name__)

HANDLING_TIMEOUT_SECONDS = 120.0
PTB_SLOTS = 100_000


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """A slow reply to one user never holds up another; one user's messages keep their order.

    PTB handles updates one at a time by default, and with plain `concurrent_updates` a user's
    "/tasks" could be answered before the link they sent just before it.
    """

    def __init__(
        self,
        max_concurrent_updates: int,
        on_handled: Callable[[int], Awaitable[None]] | None = None,
        *,
        intake: Intake | None = None,
        on_poisoned: Callable[[int, str], Awaitable[None]] | None = None,
        handling_timeout: float = HANDLING_TIMEOUT_SECONDS,
    ) -> None:
        # PTB's own slots (BaseUpdateProcessor.process_update, which is final) are taken before
        # do_process_update: they only bound the tasks; the real slots are ours, taken after
        # the chat's turn.
        super().__init__(PTB_SLOTS)
        # A lock lives as long as some update of its chat holds or waits for it.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        # Told each update id once its handlers have run (successfully or not): see bot.polling.
        self._on_handled = on_handled
        self._on_poisoned = on_poisoned
        self._intake = intake
        self._handling_timeout = handling_timeout
        self._slots = asyncio.Semaphore(max_concurrent_updates)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        if self._intake is not None and isinstance(update, Update):
            screening = self._intake.screen(update)
            if screening is not Screening.HANDLE:
                _discard(coroutine)
                if screening is Screening.DROP:
                    await self._handled(update)
                    return
                coroutine = self._intake.answer(update, screening)
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await self._run(update, coroutine)
            return
        lock = self._locks.get(chat.id)
        if lock is None:
            lock = self._locks[chat.id] = asyncio.Lock()
        async with lock:
            await self._run(update, coroutine)

    async def _run(self, update: object, coroutine: Awaitable[Any]) -> None:
        async with self._slots:
            try:
                async with asyncio.timeout(self._handling_timeout):
                    await coroutine
            except TimeoutError:
                if isinstance(update, Update):
                    kind = _kind(update)
                    log.error(
                        "update %d (%s) was still being handled after %.0f s: stopped and set "
                        "aside as poisoned",
                        update.update_id,
                        kind,
                        self._handling_timeout,
                    )
                    if self._on_poisoned is not None:
                        await self._on_poisoned(update.update_id, kind)
                return
        await self._handled(update)

    async def _handled(self, update: object) -> None:
        if isinstance(update, Update) and self._on_handled is not None:
            await self._on_handled(update.update_id)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _discard(coroutine: Awaitable[Any]) -> None:
    close = getattr(coroutine, "close", None)
    if callable(close):
        close()  # never awaited on purpose: no "coroutine was never awaited" warning


def _kind(update: Update) -> str:
    """The update's type for a log line (message, callback_query, ...): never its content."""
    return next((kind for kind in Update.ALL_TYPES if getattr(update, kind, None)), "update")

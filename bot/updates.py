"""Update processing: different chats concurrently, one chat's updates in order."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """A slow reply to one user never holds up another; one user's messages keep their order.

    PTB handles updates one at a time by default, and with plain `concurrent_updates` a user's
    "/tasks" could be answered before the link they sent just before it.
    """

    def __init__(
        self,
        max_concurrent_updates: int,
        on_handled: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(max_concurrent_updates)
        # A lock lives as long as some update of its chat holds or waits for it.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        # Told each update id once its handlers have run (successfully or not): see bot.polling.
        self._on_handled = on_handled

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
        else:
            lock = self._locks.get(chat.id)
            if lock is None:
                lock = self._locks[chat.id] = asyncio.Lock()
            async with lock:
                await coroutine
        if isinstance(update, Update) and self._on_handled is not None:
            await self._on_handled(update.update_id)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

"""PTB's AIORateLimiter, with one budget for every call and 429s (RetryAfter) pausing the chat
concerned instead of the bot.

AIORateLimiter keeps a group's per-minute limit, used here as it is. The bot's overall rate
(`overall_max_rate` a second) is a sliding window shared by every call that comes here, in
priority order (bot.budget): answers to users first, texts second, progress edits last. The
other change is RetryAfter: AIORateLimiter holds every request of the bot until the wait
is over, so a 429 in one chat held every other chat. Here a 429 is recorded in a registry of
pauses (bot.pauses), shared with the delivery loop, which pauses that chat only, or every chat
when several chats get a 429 at once (Telegram's bot-wide limit).

- Handler replies (the default `rate_limit_args`, priority ANSWER): a request waits out its
  chat's pause, is sent, and after a 429 waits again and is resent, up to `max_retries` times,
  then raises.
- `rate_limit_args=NO_RETRIES` (the delivery loop's texts, priority TEXT) and
  `PROGRESS_EDIT` (its progress edits, priority PROGRESS): a 429 is recorded and the
  RetryAfter raised at once; a request whose chat is paused is not sent but raises `Paused`
  (a RetryAfter for the time left). The delivery loop waits where it can also stop for a
  shutdown, and knows that nothing was sent.
- Requests with no `chat_id` (setMyCommands, answerCallbackQuery; getUpdates never comes
  here) are never paused: they are not messages in a chat, and a callback answer held for a
  long pause would come too late. A 429 on one is waited out by that request alone.

Relies on private names of AIORateLimiter (PTB pinned ~=22.8): `_apb_limiter`,
`_group_max_rate`, `_get_group_limiter` and `_max_retries`. Its `_base_limiter` (made with a
rate of 0, so None), `_run_request` and `_retry_after_event` (the bot-wide pause) are not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telegram._utils.types import JSONDict
from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter, ExtBot

from bot.budget import Priority, SlidingBudget
from bot.pauses import ChatKey, Pauses, chat_key, retry_seconds

log = logging.getLogger(__name__)

#: Pass as `rate_limit_args` to get RetryAfter raised at once (PTB reads 0 as "not given"):
#: a text of the delivery loop, or (lowest priority) a progress edit.
NO_RETRIES = -1
PROGRESS_EDIT = -2

Callback = Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]]

#: Set-up calls, made at start and not messages to anyone: outside the budget (as Telegram's
#: bot-wide limit is about what the bot sends).
SET_UP_ENDPOINTS = frozenset(
    {
        "getMe",
        "setWebhook",
        "deleteWebhook",
        "getWebhookInfo",
        "setMyCommands",
        "setMyDescription",
        "setMyShortDescription",
    }
)


class Paused(RetryAfter):
    """Not sent: the chat (or every chat) is paused for `retry_after` more seconds."""

    __slots__ = ()


class RateLimiter(AIORateLimiter):
    __slots__ = ("budget", "pauses")

    def __init__(
        self,
        overall_max_rate: float = 30.0,
        *,
        max_retries: int = 0,
        pauses: Pauses | None = None,
    ) -> None:
        # The overall rate is the budget's: AIORateLimiter's own leaky bucket is left out.
        super().__init__(overall_max_rate=0, max_retries=max_retries)
        self.budget = SlidingBudget(overall_max_rate)
        self.pauses = pauses if pauses is not None else Pauses()

    async def process_request(
        self,
        callback: Callback,
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | JSONDict | list[JSONDict]:
        chat = chat_key(data.get("chat_id"))
        # As AIORateLimiter decides: a negative id (or a @name) is a group, limited per minute.
        group: ChatKey | bool = False
        if chat is not None and (isinstance(chat, str) or chat < 0):
            group = chat
        paid = bool(data.get("allow_paid_broadcast", False))
        priority = {NO_RETRIES: Priority.TEXT, PROGRESS_EDIT: Priority.PROGRESS}.get(
            rate_limit_args or 0, Priority.ANSWER
        )
        raise_at_once = priority is not Priority.ANSWER
        retries = 0 if raise_at_once else (rate_limit_args or self._max_retries)
        for attempt in range(retries + 1):
            try:
                budgeted = None if endpoint in SET_UP_ENDPOINTS else priority
                return await self._send(
                    chat, group, paid, raise_at_once, budgeted, callback, args, kwargs
                )
            except Paused:
                raise
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                self.pauses.record(chat, seconds)
                if attempt == retries:
                    if not raise_at_once:
                        log.warning("%s: still throttled after %d retries", endpoint, retries)
                    raise
                if chat is None:
                    await asyncio.sleep(seconds)
                # else the next attempt waits out the chat's pause (or every chat's)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _send(
        self,
        chat: ChatKey | None,
        group: ChatKey | bool,
        paid: bool,
        raise_at_once: bool,
        priority: Priority | None,
        callback: Callback,
        args: Any,
        kwargs: dict[str, Any],
    ) -> bool | JSONDict | list[JSONDict]:
        # Wait before taking a place in the limiters, so a paused chat does not use up the
        # overall rate; check again after, in case a pause began meanwhile.
        await self._wait_for_chat(chat, raise_at_once)
        limiters: list[contextlib.AbstractAsyncContextManager[Any]] = []
        if paid:
            limiters.append(self._apb_limiter)
        elif group is not False and self._group_max_rate:
            limiters.append(self._get_group_limiter(group))
        async with contextlib.AsyncExitStack() as stack:
            for limiter in limiters:
                await stack.enter_async_context(limiter)
            if priority is not None:  # None: a set-up call, outside the budget
                await stack.enter_async_context(self.budget.place(priority))
            await self._wait_for_chat(chat, raise_at_once)
            return await callback(*args, **kwargs)

    async def _wait_for_chat(self, chat: ChatKey | None, raise_at_once: bool) -> None:
        if not raise_at_once:
            await self.pauses.wait(chat)
            return
        left = self.pauses.remaining(chat)
        if left > 0:
            raise Paused(dt.timedelta(seconds=left))


def pauses_of(bot: ExtBot[Any]) -> Pauses:
    """The registry of pauses of the bot's rate limiter, to share with the delivery loop."""
    limiter = bot.rate_limiter
    if not isinstance(limiter, RateLimiter):
        raise TypeError("the bot must use bot.ratelimit.RateLimiter")
    return limiter.pauses

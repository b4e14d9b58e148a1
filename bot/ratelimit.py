"""PTB's AIORateLimiter, with a way for one request to skip its RetryAfter retries.

AIORateLimiter keeps the bot under Telegram's overall limit and waits out a RetryAfter by
itself (pausing every request meanwhile), which suits replies in a handler. The delivery loop
wants the RetryAfter instead: it waits it out where it can also stop for a shutdown, and knows
that nothing was sent. PTB reads `rate_limit_args=0` as "not given", hence a sentinel.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram._utils.types import JSONDict
from telegram.ext import AIORateLimiter

#: Pass as `rate_limit_args` to get RetryAfter raised at once.
NO_RETRIES = -1


class RateLimiter(AIORateLimiter):
    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | JSONDict | list[JSONDict]:
        if rate_limit_args != NO_RETRIES:
            return await super().process_request(
                callback, args, kwargs, endpoint, data, rate_limit_args
            )
        chat_id = data.get("chat_id")
        # As AIORateLimiter decides: a negative id (or a @name) is a group, limited per minute.
        group: int | str | bool = False
        if (isinstance(chat_id, int) and chat_id < 0) or isinstance(chat_id, str):
            group = chat_id
        return await self._run_request(
            chat=chat_id is not None,
            group=group,
            allow_paid_broadcast=bool(data.get("allow_paid_broadcast", False)),
            callback=callback,
            args=args,
            kwargs=kwargs,
        )

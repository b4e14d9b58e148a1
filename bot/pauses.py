"""Who must wait after a 429 (RetryAfter), and until when: one chat, or every chat.

Telegram answers 429 with `retry_after` seconds and does not say which of its limits was hit
(about 1 message/s in a chat, 20/min in a group, about 30/s for the bot as a whole:
shared/docs/telegram.md). A 429 in one chat pauses that chat only, for the time asked. The
bot-wide limit shows as 429s in whatever chats the next sends go to, so when `chats_for_all`
distinct chats get a 429 within `window` seconds, every chat is paused until the longest of
those asks is over.

Why 3 chats within 2 s: the delivery loop keeps each chat under its own limit, so a 429 in a
chat is rare, and two unrelated ones at about the same moment happen (a busy group, a user
getting replies and a text at once). Three distinct chats within 2 s are far likelier to be
the bot-wide limit: at the rates the bot sends (up to 20/s of deliveries plus replies) sends
over that limit go to different chats within a fraction of a second, and even at a couple of
sends a second three chats are reached within the window. Mistaking unrelated 429s for the
bot-wide limit costs only a pause of every chat (what PTB's AIORateLimiter always does);
missing the bot-wide limit would keep sending into it.

One registry serves the bot's rate limiter (handler replies: bot.ratelimit) and the delivery
loop, so a reply and a delivery to the same chat respect the same pause. Calls with no chat
(getUpdates, setMyCommands, answerCallbackQuery) are never paused here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from telegram.error import RetryAfter

log = logging.getLogger(__name__)

#: A chat as the rate limiter sees `chat_id`: an int id, or a "@channel" name.
ChatKey = int | str

CHATS_FOR_ALL = 3
WINDOW_SECONDS = 2.0
_FORGET_AFTER = 10_000  # chat pauses kept before the expired ones are dropped


def chat_key(chat_id: object) -> ChatKey | None:
    """The chat a request goes to (None: no chat), "123" and 123 being the same chat."""
    if chat_id is None:
        return None
    if isinstance(chat_id, int):
        return chat_id
    text = str(chat_id)
    with contextlib.suppress(ValueError):
        return int(text)
    return text


def retry_seconds(exc: RetryAfter) -> float:
    """The wait asked, in seconds (PTB gives an int or a timedelta, see bot/__init__.py)."""
    value: object = exc.retry_after
    total = getattr(value, "total_seconds", None)
    seconds = float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
    return max(0.0, seconds)


class Pauses:
    """Pauses after 429s: per chat, and for all chats when several chats get one at once.

    Times are `clock()` seconds (time.monotonic, the clock of asyncio's default loop).
    """

    def __init__(
        self,
        *,
        chats_for_all: int = CHATS_FOR_ALL,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chats_for_all = chats_for_all
        self._window = window
        self._clock = clock
        self._chat_until: dict[ChatKey, float] = {}
        self._all_until = 0.0
        # The latest 429 of each chat within the window: chat -> (when, until).
        self._recent: dict[ChatKey, tuple[float, float]] = {}

    def record(self, chat: ChatKey | None, seconds: float) -> None:
        """Telegram answered 429 to a request for `chat`, asking to wait `seconds`."""
        if chat is None:
            return  # no chat to pause; the caller waits it out for that request alone
        moment = self._clock()
        until = moment + max(0.0, seconds)
        self._chat_until[chat] = max(self._chat_until.get(chat, 0.0), until)
        self._recent = {
            key: seen for key, seen in self._recent.items() if seen[0] >= moment - self._window
        }
        self._recent[chat] = (moment, max(until, self._recent.get(chat, (moment, 0.0))[1]))
        if len(self._recent) >= self._chats_for_all:
            longest = max(end for _, end in self._recent.values())
            if longest > self._all_until:
                log.warning(
                    "Telegram asked %d chats to wait within %.0f s (its overall limit): "
                    "pausing every chat for %.1f s",
                    len(self._recent),
                    self._window,
                    longest - moment,
                )
                self._all_until = longest
        else:
            log.warning("Telegram asks chat %s to wait %.1f s", chat, seconds)
        if len(self._chat_until) > _FORGET_AFTER:
            self._chat_until = {k: due for k, due in self._chat_until.items() if due > moment}

    def remaining(self, chat: ChatKey | None) -> float:
        """Seconds before a request for `chat` may go (0 or less: now)."""
        if chat is None:
            return 0.0
        until = max(self._all_until, self._chat_until.get(chat, 0.0))
        return until - self._clock()

    async def wait(self, chat: ChatKey | None) -> None:
        """Wait until `chat` may take a request again (a pause may grow while waiting)."""
        while True:
            left = self.remaining(chat)
            if left <= 0:
                return
            await asyncio.sleep(left)

"""Intake: what each update is allowed to cost, decided before any handler runs.

Screening is in memory and takes no time. First, what the bot never acts on (bot.groups:
group chatter not addressed to it, service messages, messages from bots) is dropped, so it
never counts against a limit. Then, so a user who floods the bot is turned away before
their messages reach the database, Telegram or Coze: blocked users are ignored entirely; a
user past `max_messages_per_user_per_minute` is told once to slow down and the rest of their
messages that minute are dropped; with an allow-list, other users get one polite sentence.
Admins pass always.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from enum import Enum

from telegram import Update
from telegram.error import TelegramError

from bot.groups import acts_on
from bot.handlers import tell
from bot.languages import Languages
from tasks import AccessList

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0


class Screening(Enum):
    HANDLE = "handle"
    DROP = "drop"  # no answer at all
    SLOW_DOWN = "slow_down"  # told once, then dropped for the rest of the minute
    NOT_ALLOWED = "not_allowed"  # one polite sentence


class MessageRate:
    """At most `limit` messages per user in any `window` seconds (a sliding window)."""

    def __init__(
        self,
        limit: int,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}
        self._told: set[int] = set()  # users told to slow down in their current excess

    def admit(self, user_id: int) -> Screening:
        if not self._limit:
            return Screening.HANDLE
        moment = self._clock()
        seen = self._seen.setdefault(user_id, deque())
        while seen and seen[0] <= moment - self._window:
            seen.popleft()
        if len(seen) < self._limit:
            seen.append(moment)
            self._told.discard(user_id)
            self._forget_idle(moment)
            return Screening.HANDLE
        if user_id in self._told:
            return Screening.DROP
        self._told.add(user_id)
        return Screening.SLOW_DOWN

    def _forget_idle(self, moment: float) -> None:
        if len(self._seen) < 10_000:
            return
        cutoff = moment - self._window
        self._seen = {user: seen for user, seen in self._seen.items() if seen[-1] > cutoff}
        self._told &= set(self._seen)


class Intake:
    def __init__(
        self, access: AccessList, languages: Languages, *, max_messages_per_minute: int
    ) -> None:
        self._access = access
        self._languages = languages
        self._rate = MessageRate(max_messages_per_minute)

    def screen(self, update: object) -> Screening:
        if not isinstance(update, Update):
            return Screening.HANDLE
        # Group chatter not meant for the bot, service messages and bots' messages are not
        # the bot's business: they never count against anyone's limits or get an answer.
        try:
            bot = update.get_bot()
        except RuntimeError:
            bot = None
        if bot is not None and not acts_on(update, bot_username=bot.username, bot_id=bot.id):
            return Screening.DROP
        user = update.effective_user
        if user is None:
            return Screening.HANDLE
        if self._access.is_blocked(user.id):
            return Screening.DROP
        if self._access.is_admin(user.id):
            return Screening.HANDLE
        verdict = self._rate.admit(user.id)
        if verdict is not Screening.HANDLE:
            if verdict is Screening.SLOW_DOWN:
                log.warning("user %s sends too many messages: ignored for a minute", user.id)
            return verdict
        if not self._access.is_allowed(user.id):
            return Screening.NOT_ALLOWED
        return Screening.HANDLE

    async def answer(self, update: Update, screening: Screening) -> None:
        """The one answer a screened-out update gets (SLOW_DOWN and NOT_ALLOWED)."""
        # In the language known without the database: a flood must not cost queries.
        texts = self._languages.texts_now(update.effective_user)
        words = texts.slow_down if screening is Screening.SLOW_DOWN else texts.not_allowed
        try:
            await tell(update, words, alert=True)
        except TelegramError as exc:
            log.info("could not answer a screened update %d: %s", update.update_id, exc)

"""What each user chose: their language (/lang) and how texts come (/settings).

Read for almost every message the bot sends, so kept in memory once read, for `max_age`
seconds: another instance on the same database may store a change (the user's /lang reached
it), and this one reads it again after that long. Every change is stored first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from storage import repository

MAX_CACHED_USERS = 100_000
#: Seconds a user's preferences are used as read before they are read again.
MAX_AGE_SECONDS = 10.0


@dataclass(frozen=True)
class UserPreferences:
    language: str | None = None  # chosen with /lang; None: follow Telegram's language
    language_code: str | None = None  # what Telegram last reported for the user
    always_as_file: bool = False


class Preferences:
    def __init__(self, max_age_seconds: float = MAX_AGE_SECONDS) -> None:
        self._known: dict[int, UserPreferences] = {}
        self._read_at: dict[int, float] = {}
        self._max_age = max_age_seconds

    async def of(self, user_id: int) -> UserPreferences:
        known = self._known.get(user_id)
        read_at = self._read_at.get(user_id, 0.0)
        if known is None or time.monotonic() - read_at > self._max_age:
            user = await repository.get_user(user_id)
            known = (
                UserPreferences(user.language, user.language_code, user.always_as_file)
                if user is not None
                else UserPreferences()
            )
            self._remember(user_id, known)
        return known

    def cached(self, user_id: int) -> UserPreferences | None:
        """What is known without asking the database (for decisions that must not wait)."""
        return self._known.get(user_id)

    def reported(self, user_id: int, language_code: str | None) -> None:
        """Telegram reported the user's app language (stored with the user's next task)."""
        known = self._known.get(user_id)
        if known is not None and language_code and known.language_code != language_code:
            self._known[user_id] = replace(known, language_code=language_code)

    async def choose_language(self, user_id: int, first_name: str, language: str) -> None:
        await repository.set_user_preference(user_id, first_name, language=language)
        self._remember(user_id, replace(await self.of(user_id), language=language))

    async def choose_files(self, user_id: int, first_name: str, always_as_file: bool) -> None:
        await repository.set_user_preference(user_id, first_name, always_as_file=always_as_file)
        self._remember(user_id, replace(await self.of(user_id), always_as_file=always_as_file))

    def forget(self, user_id: int) -> None:
        self._known.pop(user_id, None)
        self._read_at.pop(user_id, None)

    def _remember(self, user_id: int, preferences: UserPreferences) -> None:
        if len(self._known) >= MAX_CACHED_USERS:
            self._known.clear()  # read again from the database as needed
            self._read_at.clear()
        self._known[user_id] = preferences
        self._read_at[user_id] = time.monotonic()

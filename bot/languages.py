"""The texts a user reads: in the language they chose with /lang, or Telegram's language."""

from __future__ import annotations

from telegram import User as TelegramUser

from bot import texts
from bot.i18n import language_of
from tasks.preferences import Preferences


class Languages:
    def __init__(self, preferences: Preferences, *, default: str) -> None:
        self.preferences = preferences
        self._default = default

    async def texts_for(self, user: TelegramUser | None) -> texts.Texts:
        """For someone who just wrote: Telegram tells their app's language."""
        if user is None:
            return texts.for_language(self._default)
        chosen = (await self.preferences.of(user.id)).language
        # After reading what is stored: what Telegram says now is newer.
        self.preferences.reported(user.id, user.language_code)
        return texts.for_language(chosen or language_of(user.language_code, self._default))

    def texts_now(self, user: TelegramUser | None) -> texts.Texts:
        """The same without waiting for the database (a choice not read yet is not known)."""
        if user is None:
            return texts.for_language(self._default)
        known = self.preferences.cached(user.id)
        chosen = known.language if known is not None else None
        return texts.for_language(chosen or language_of(user.language_code, self._default))

    async def texts_of_user(self, user_id: int) -> texts.Texts:
        """For a user the bot writes to unprompted (a delivered text): what was stored."""
        known = await self.preferences.of(user_id)
        return texts.for_language(known.language or language_of(known.language_code, self._default))

"""A user's choices: /lang (中文 / English) and /settings (texts as messages or as files)."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from bot import buttons, texts
from bot.buttons import Action
from bot.languages import Languages

log = logging.getLogger(__name__)


class ChoiceHandlers:
    def __init__(self, languages: Languages) -> None:
        self._languages = languages
        self._preferences = languages.preferences

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("lang", self.lang, filters=messages))
        application.add_handler(CommandHandler("settings", self.settings, filters=messages))
        application.add_handler(CallbackQueryHandler(self.on_button, pattern=r"^(l|s):"))

    async def lang(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        words = (await self._languages.texts_for(update.effective_user)).choose_language
        await message.reply_text(words, parse_mode=None, reply_markup=buttons.languages())

    async def settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        texts = await self._languages.texts_for(sender)
        chosen = (await self._preferences.of(sender.id)).always_as_file
        await message.reply_text(
            texts.settings(chosen), parse_mode=None, reply_markup=buttons.file_settings(texts)
        )

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        press = buttons.read(query.data)
        user = query.from_user
        if press is not None and press.action is Action.LANGUAGE:
            await self._preferences.choose_language(user.id, user.first_name, press.value)
            words = texts.for_language(press.value).language_set
        elif press is not None and press.action is Action.FILES:
            always = press.value == "file"
            await self._preferences.choose_files(user.id, user.first_name, always)
            words = (await self._languages.texts_for(user)).settings(always)
        else:
            await query.answer((await self._languages.texts_for(user)).button_unknown)
            return
        await query.answer(words)
        try:
            await query.edit_message_text(words, parse_mode=None)
        except BadRequest as exc:  # e.g. "message is not modified" after a second press
            log.info("could not edit a choice message: %s", exc.message)

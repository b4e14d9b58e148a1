"""Admins' commands: /stats, /block ID, /unblock ID. Anyone else hears of no such command."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes, filters

from bot.handlers import answer, the_number
from bot.languages import Languages
from bot.texts import Texts
from tasks import AccessList
from tasks.stats import collect_stats

log = logging.getLogger(__name__)


class AdminHandlers:
    def __init__(self, access: AccessList, languages: Languages) -> None:
        self._access = access
        self._languages = languages

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("stats", self.stats, filters=messages))
        application.add_handler(CommandHandler("block", self.block, filters=messages))
        application.add_handler(CommandHandler("unblock", self.unblock, filters=messages))

    async def _admin(self, update: Update) -> tuple[Texts, int] | None:
        """The admin's texts and id; anyone else is told there is no such command."""
        sender = update.effective_user
        texts = await self._languages.texts_for(sender)
        if sender is None or not self._access.is_admin(sender.id):
            await answer(update, texts.unknown_command)
            return None
        return texts, sender.id

    async def stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        admin = await self._admin(update)
        if admin is not None:
            await answer(update, admin[0].stats(await collect_stats()))

    async def block(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._change_block(update, context, blocking=True)

    async def unblock(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._change_block(update, context, blocking=False)

    async def _change_block(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, *, blocking: bool
    ) -> None:
        admin = await self._admin(update)
        if admin is None:
            return
        texts, admin_id = admin
        user_id = the_number(context.args)
        if user_id is None:
            await answer(update, texts.block_usage)
            return
        if blocking and self._access.is_admin(user_id):
            await answer(update, texts.cannot_block_admin)
            return
        if blocking:
            changed = await self._access.block(user_id, by=admin_id)
            words = texts.blocked(user_id, changed)
        else:
            changed = await self._access.unblock(user_id, by=admin_id)
            words = texts.unblocked(user_id, changed)
        log.info("admin %s %s user %s", admin_id, "blocked" if blocking else "unblocked", user_id)
        await answer(update, words)

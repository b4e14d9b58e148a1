"""A user's history: /tasks (ten at a time, Older/Newer), /get N, /find WORDS, /delete N and
/forget (both after a confirmation button). Each touches only the user's own tasks."""

from __future__ import annotations

import logging

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from bot import buttons
from bot.buttons import Action
from bot.handlers import answer, quote_in_groups, send_as_file, the_number
from bot.languages import Languages
from bot.splitting import split_text
from bot.texts import Texts, number_of
from storage import Task
from tasks import TaskService
from tasks.history import History

log = logging.getLogger(__name__)

#: Past this many messages a text asked for with /get comes as a .txt document.
MAX_TEXT_MESSAGES = 3
#: Tasks listed by /find.
SHOWN_HITS = 10


class HistoryHandlers:
    def __init__(self, service: TaskService, languages: Languages) -> None:
        self._service = service
        self._languages = languages
        self._history = History()

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("tasks", self.tasks, filters=messages))
        application.add_handler(CommandHandler("get", self.get, filters=messages))
        application.add_handler(CommandHandler("find", self.find, filters=messages))
        application.add_handler(CommandHandler("delete", self.delete, filters=messages))
        application.add_handler(CommandHandler("forget", self.forget, filters=messages))
        application.add_handler(CallbackQueryHandler(self.on_button, pattern=r"^(p|del|fg|x):"))

    async def tasks(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        texts = await self._languages.texts_for(sender)
        text, markup = await self._page(texts, sender.id)
        await message.reply_text(
            text, parse_mode=None, reply_markup=markup, reply_parameters=quote_in_groups(message)
        )

    async def _page(
        self,
        texts: Texts,
        user_id: int,
        *,
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> tuple[str, InlineKeyboardMarkup | None]:
        page = await self._history.page(user_id, older_than=older_than, newer_than=newer_than)
        user = await self._service.user(user_id)
        text = texts.task_list(user, page.tasks, first=page.first_position, total=page.total)
        return text, buttons.pages(texts, page.older_cursor, page.newer_cursor)

    async def get(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        texts = await self._languages.texts_for(sender)
        task = await self._numbered_task(update, context, texts, "get")
        if task is None:
            return
        if not task.result_text:
            await answer(update, texts.no_text_yet(task))
            return
        await self._send_text(message, texts, task, task.result_text)

    async def _send_text(self, message: Message, texts: Texts, task: Task, text: str) -> None:
        full = f"{texts.result_header(task)}\n\n{text}"
        pieces = [piece.strip() for piece in split_text(full) if piece.strip()]
        always_as_file = (await self._languages.preferences.of(task.user_id)).always_as_file
        if always_as_file or len(pieces) > MAX_TEXT_MESSAGES:
            await send_as_file(
                message.get_bot(),
                message.chat_id,
                texts,
                task,
                text,
                reply=quote_in_groups(message),
            )
            return
        for index, piece in enumerate(pieces):
            await message.reply_text(
                piece,
                parse_mode=None,
                reply_parameters=quote_in_groups(message) if index == 0 else None,
            )

    async def find(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        sender = update.effective_user
        if sender is None:
            return
        texts = await self._languages.texts_for(sender)
        words = " ".join(context.args or []).strip()
        if not words:
            await answer(update, texts.find_usage)
            return
        # One more than is shown: whether there are more than the newest SHOWN_HITS.
        hits = await self._history.search(sender.id, words, limit=SHOWN_HITS + 1)
        shown = [(number_of(hit.task), hit.snippet) for hit in hits[:SHOWN_HITS]]
        await answer(update, texts.found(words, shown, more=len(hits) > SHOWN_HITS))

    async def delete(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        texts = await self._languages.texts_for(update.effective_user)
        task = await self._numbered_task(update, context, texts, "delete")
        if task is None:
            return
        await message.reply_text(
            texts.confirm_delete(task),
            parse_mode=None,
            reply_markup=buttons.confirm_delete(texts, task),
            reply_parameters=quote_in_groups(message),
        )

    async def forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        texts = await self._languages.texts_for(sender)
        count, running = await self._history.count_deletable(sender.id)
        if not count:
            await answer(update, texts.task_list(None, []) if not running else texts.all_running)
            return
        await message.reply_text(
            texts.confirm_forget(count, running),
            parse_mode=None,
            reply_markup=buttons.confirm_forget(texts, sender.id),
            reply_parameters=quote_in_groups(message),
        )

    async def _numbered_task(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, texts: Texts, command: str
    ) -> Task | None:
        """The user's task named by the command's argument; the user is told when none."""
        sender = update.effective_user
        number = the_number(context.args)
        if sender is None or number is None:
            await answer(update, texts.usage(command))
            return None
        task = await self._history.task(sender.id, number)
        if task is None:
            await answer(update, texts.no_such_task(number))
        return task

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user_id = query.from_user.id
        texts = await self._languages.texts_for(query.from_user)
        press = buttons.read(query.data)
        if press is None:
            await query.answer(texts.button_unknown)
        elif press.action is Action.PAGE:
            older = press.number if press.value == "o" else None
            newer = press.number if press.value == "n" else None
            # Pages of whoever pressed: in a group, a button under someone else's list shows
            # the presser their own tasks, never the other person's.
            text, markup = await self._page(texts, user_id, older_than=older, newer_than=newer)
            await query.answer()
            await _edit(query, text, markup)
        elif press.action is Action.DELETE:
            if press.owner != user_id or press.number is None:
                await query.answer(texts.button_not_yours)
                return
            task = await self._history.task(user_id, press.number)
            if task is not None and not await self._history.delete(user_id, press.number):
                await query.answer(texts.busy(task), show_alert=True)
                return
            await query.answer()
            await _edit(query, texts.deleted(press.number), None)
        elif press.owner != user_id:
            # Delete everything, or Cancel: only whom the question was for may answer it.
            await query.answer(texts.button_not_yours)
        elif press.action is Action.FORGET:
            count = await self._history.forget(user_id)
            await query.answer()
            await _edit(query, texts.forgotten(count), None)
        else:  # CANCEL
            await query.answer()
            await _edit(query, texts.cancelled, None)


async def _edit(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await query.edit_message_text(text, parse_mode=None, reply_markup=markup)
    except BadRequest as exc:  # "message is not modified" after a second press
        log.info("could not edit a history message: %s", exc.message)

"""PTB handlers: pasted links, /start, /help, /status, and the buttons under a task.

Admins' commands are in bot.admin, a user's history in bot.history, their choices (/lang,
/settings) in bot.choices. Every word comes from the user's texts (bot.languages).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from telegram import Bot, CallbackQuery, Message, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import buttons
from bot.buttons import Action
from bot.languages import Languages
from bot.links import scan_links
from bot.texts import Texts, number_of
from storage import Task
from storage.repository import RetryRefusal
from tasks import AccessList, Allowance, QuotaRefusal, TaskService, UserInfo

log = logging.getLogger(__name__)

# ASCII digits only: str.isdigit() is also true of "²" and other digits int() cannot read.
_NUMBER = re.compile(r"#?([0-9]{1,12})")
TASK_BUTTONS = r"^(r|rf|f):|^retry:"


def the_number(args: list[str] | None) -> int | None:
    """The one argument of a command, as a number (ASCII digits, an optional #), or None."""
    match = _NUMBER.fullmatch(args[0]) if args and len(args) == 1 else None
    return int(match.group(1)) if match is not None else None


def reply_to(message: Message) -> ReplyParameters:
    return ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True)


def quote_in_groups(message: Message) -> ReplyParameters | None:
    """In a group an answer quotes the message it answers; in a private chat it need not."""
    return None if message.chat.type == message.chat.PRIVATE else reply_to(message)


async def answer(update: Update, text: str) -> None:
    """Answer a command in plain text (quoting it in a group)."""
    message = update.effective_message
    if message is not None:
        await message.reply_text(text, parse_mode=None, reply_parameters=quote_in_groups(message))


async def tell(update: Update, words: str, *, alert: bool = False) -> None:
    """Whatever the update was, the one short answer it gets: a toast (or an alert) for a
    button press, a message otherwise."""
    if update.callback_query is not None:
        await update.callback_query.answer(words, show_alert=alert)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(words, parse_mode=None)


async def send_as_file(
    bot: Bot,
    chat_id: int,
    texts: Texts,
    task: Task,
    text: str,
    *,
    reply: ReplyParameters | None = None,
) -> None:
    """A task's text as a .txt document, asked for by its owner (/get, As a file); the chat
    shows "sending a file..." meanwhile."""
    await bot.send_chat_action(chat_id, ChatAction.UPLOAD_DOCUMENT)
    await bot.send_document(
        chat_id,
        document=text.encode("utf-8"),
        filename=f"task-{number_of(task)}.txt",
        caption=texts.file_caption(task),
        parse_mode=None,
        reply_parameters=reply,
    )


class Handlers:
    """Handlers bound to the task service (passed in, never global)."""

    def __init__(
        self,
        service: TaskService,
        languages: Languages,
        *,
        max_links_per_message: int,
        access: AccessList | None = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self._service = service
        self._languages = languages
        self._max_links = max_links_per_message
        self._access = access or AccessList()
        self._allowed_hosts = tuple(allowed_hosts)

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        # What the bot must not act on (in groups, what is not addressed to it; anywhere,
        # bots and service messages) never gets here: bot.intake drops it (bot/groups.py).
        messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("start", self.start, filters=messages))
        application.add_handler(CommandHandler("help", self.help, filters=messages))
        application.add_handler(CommandHandler("status", self.status, filters=messages))
        application.add_handler(CallbackQueryHandler(self.on_task_button, pattern=TASK_BUTTONS))

    def register_fallbacks(self, application: Application) -> None:  # type: ignore[type-arg]
        """After every other module's handlers: unknown commands, links, unknown buttons."""
        messages = filters.UpdateType.MESSAGE
        application.add_handler(MessageHandler(messages & filters.COMMAND, self.unknown))
        application.add_handler(MessageHandler(messages, self.on_message))
        application.add_handler(CallbackQueryHandler(self.on_unknown_button))

    async def texts(self, update: Update) -> Texts:
        return await self._languages.texts_for(update.effective_user)

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await answer(update, (await self.texts(update)).start)

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await answer(update, (await self.texts(update)).help)

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await answer(update, (await self.texts(update)).unknown_command)

    # --- links -------------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        sender = update.effective_user
        if message is None or sender is None:
            return
        if message.text is None and message.caption is None:
            return  # a service message (a pin, a join) or a sticker: nothing to answer
        texts = await self.texts(update)
        scan = scan_links(message, allowed_hosts=self._allowed_hosts)
        links = scan.links
        if not links:
            # Something that looked like a link but may not be used gets its reason.
            words = texts.link_refused(scan.refused[0][1].value) if scan.refused else texts.no_link
            await message.reply_text(words, parse_mode=None)
            return
        taken, skipped = links[: self._max_links], max(0, len(links) - self._max_links)
        user = UserInfo(
            id=sender.id,
            first_name=sender.first_name,
            username=sender.username,
            language_code=sender.language_code,
        )
        # Store first: once this returns, the tasks survive anything that happens next.
        submission = await self._service.submit(
            user,
            chat_id=message.chat_id,
            message_id=message.message_id,
            links=taken,
            exempt=self._access.is_admin(sender.id),
        )
        # Texts answered from an earlier extraction are on their way already: no ack.
        tasks = [task for task in submission.tasks if task.reused_from is None]
        if not submission.tasks:
            # Over a quota: nothing stored, no run started.
            await message.reply_text(
                self.quota_words(texts, submission.allowance),
                parse_mode=None,
                reply_parameters=reply_to(message),
            )
            return
        if not submission.new:
            # Replayed after a crash: the tasks exist and are under way; answer only if the
            # acknowledgement never went out.
            if any(task.ack_message_id is None for task in tasks):
                ack = await message.reply_text(
                    texts.accepted(tasks, skipped),
                    parse_mode=None,
                    reply_parameters=reply_to(message),
                )
                for task in tasks:
                    await self._service.set_ack_message(task, ack.message_id)
            return
        over_quota = None
        if submission.refused:
            over_quota = texts.links_not_taken(
                submission.refused, self.quota_words(texts, submission.allowance)
            )
        if not tasks:
            if over_quota:
                await message.reply_text(
                    over_quota, parse_mode=None, reply_parameters=reply_to(message)
                )
            return
        try:
            ack = await message.reply_text(
                texts.accepted(tasks, skipped, places=submission.places, over_quota=over_quota),
                parse_mode=None,
                reply_parameters=reply_to(message),
            )
            self._service.metrics.acknowledged((ack.date - message.date).total_seconds())
            for task in tasks:
                await self._service.set_ack_message(task, ack.message_id)
        finally:
            # After the acknowledgement, so a fast result never overtakes it; whatever happened
            # to the acknowledgement, the work goes on.
            self._service.start_all(tasks)

    def quota_words(self, texts: Texts, allowance: Allowance) -> str:
        if allowance.bound_by is QuotaRefusal.DAILY_LIMIT:
            limit = self._service.quotas.max_tasks_per_user_per_day
            return texts.daily_limit(limit, allowance.next_possible_at)
        if allowance.refusal is None:  # some links were taken, the rest would be too many
            return texts.active_limit(self._service.quotas.max_active_tasks_per_user)
        return texts.too_many_active(allowance.active)

    # --- one task ----------------------------------------------------------------------------

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        sender = update.effective_user
        if sender is None:
            return
        texts = await self.texts(update)
        number = the_number(context.args)
        if number is None:
            await answer(update, texts.status_usage)
            return
        task = await self._service.task_of(sender.id, number)
        if task is None:
            await answer(update, texts.no_such_task(number))
            return
        await answer(update, texts.task_status(task, self._service.max_retries))

    # --- buttons under a task ----------------------------------------------------------------

    async def on_unknown_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer((await self.texts(update)).button_unknown)

    async def on_task_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        texts = await self.texts(update)
        press = buttons.read(query.data)
        if press is None:
            await query.answer(texts.button_unknown)
            return
        if press.action is Action.AS_FILE:
            await self._send_as_file(query, texts, press.owner, press.number)
            return
        decision = await self._service.retry(
            user_id=query.from_user.id,
            task_id=press.task_id,
            owner=press.owner,
            number=press.number,
            exempt=self._access.is_admin(query.from_user.id),
            refresh=press.action is Action.REFRESH,
        )
        if isinstance(decision, Allowance):
            # A Retry is a task for the quotas: the button stays for later.
            await query.answer(self.quota_words(texts, decision), show_alert=True)
            return
        task = decision.task
        if decision.refusal is RetryRefusal.NOT_FOUND or task is None:
            # A forged button, or someone else's: say nothing about the task, change nothing.
            await query.answer(texts.button_not_yours)
            return
        if decision.refusal is RetryRefusal.BUSY:
            await query.answer(texts.busy(task))
            return
        if decision.refusal is RetryRefusal.NO_RETRIES_LEFT:
            await query.answer(texts.no_retries_left(task), show_alert=True)
        elif press.action is Action.REFRESH:
            await query.answer(texts.refreshing(task))
        else:
            await query.answer(texts.retrying(task, self._service.max_retries))
        # Either way this button has done its work: the new outcome brings a fresh one.
        await self._remove_buttons(query.message)

    async def _send_as_file(
        self, query: CallbackQuery, texts: Texts, owner: int | None, number: int | None
    ) -> None:
        task = (
            await self._service.task_of(query.from_user.id, number)
            if owner == query.from_user.id and number is not None
            else None
        )
        if task is None:
            await query.answer(texts.button_not_yours)
            return
        if not task.result_text:
            await query.answer(texts.no_text_yet(task), show_alert=True)
            return
        await query.answer()
        chat_id = query.message.chat.id if query.message is not None else query.from_user.id
        await send_as_file(query.get_bot(), chat_id, texts, task, task.result_text)

    @staticmethod
    async def _remove_buttons(message: object) -> None:
        if not isinstance(message, Message) or message.reply_markup is None:
            return
        try:
            await message.edit_reply_markup(reply_markup=None)
        except BadRequest as exc:
            # "Message is not modified" (already removed by a quick second press) is harmless.
            log.info("could not remove a Retry button: %s", exc.message)

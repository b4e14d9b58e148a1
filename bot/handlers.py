"""PTB handlers: commands, pasted links, and the Retry button."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import groups, texts
from bot.links import scan_links
from storage.repository import RetryRefusal
from tasks import AccessList, Allowance, QuotaRefusal, TaskService, UserInfo
from tasks.stats import collect_stats

log = logging.getLogger(__name__)

RETRY_PREFIX = "retry:"
_RETRY_DATA = re.compile(r"^retry:([0-9]{1,12})$")
# ASCII digits only: str.isdigit() is also true of "²" and other digits int() cannot read.
_NUMBER = re.compile(r"#?([0-9]{1,12})")


def _the_number(args: list[str] | None) -> int | None:
    """The one argument of a command, as a number (ASCII digits, an optional #), or None."""
    match = _NUMBER.fullmatch(args[0]) if args and len(args) == 1 else None
    return int(match.group(1)) if match is not None else None


def retry_markup(task_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(texts.RETRY_LABEL, callback_data=f"{RETRY_PREFIX}{task_id}")]]
    )


def _reply_to(message: Message) -> ReplyParameters:
    return ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True)


def _quote_in_groups(message: Message) -> ReplyParameters | None:
    """In a group an answer quotes the message it answers; in a private chat it need not."""
    return None if message.chat.type == message.chat.PRIVATE else _reply_to(message)


class Handlers:
    """Handlers bound to the task service (passed in, never global)."""

    def __init__(
        self,
        service: TaskService,
        *,
        max_links_per_message: int,
        access: AccessList | None = None,
        max_tasks_per_day: int = 0,
        max_active_tasks: int = 0,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self._service = service
        self._max_links = max_links_per_message
        self._access = access or AccessList()
        self._max_tasks_per_day = max_tasks_per_day
        self._max_active_tasks = max_active_tasks
        self._allowed_hosts = tuple(allowed_hosts)

    def register(self, application: Application) -> None:  # type: ignore[type-arg]
        # Before every other handler: what the bot must not act on (in groups, what is not
        # addressed to it; anywhere, bots and service messages) stops here. See bot/groups.py.
        application.add_handler(TypeHandler(Update, groups.gate), group=groups.GATE_GROUP)
        private_messages = filters.UpdateType.MESSAGE
        application.add_handler(CommandHandler("start", self.start, filters=private_messages))
        application.add_handler(CommandHandler("help", self.help, filters=private_messages))
        application.add_handler(CommandHandler("tasks", self.tasks, filters=private_messages))
        application.add_handler(CommandHandler("status", self.status, filters=private_messages))
        application.add_handler(CommandHandler("stats", self.stats, filters=private_messages))
        application.add_handler(CommandHandler("block", self.block, filters=private_messages))
        application.add_handler(CommandHandler("unblock", self.unblock, filters=private_messages))
        application.add_handler(MessageHandler(private_messages & filters.COMMAND, self.unknown))
        application.add_handler(MessageHandler(private_messages, self.on_message))
        application.add_handler(CallbackQueryHandler(self.on_button))

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        message = update.effective_message
        await message.reply_text(
            texts.START, parse_mode=None, reply_parameters=_quote_in_groups(message)
        )

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        message = update.effective_message
        await message.reply_text(
            texts.HELP, parse_mode=None, reply_parameters=_quote_in_groups(message)
        )

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        message = update.effective_message
        await message.reply_text(
            texts.UNKNOWN_COMMAND, parse_mode=None, reply_parameters=_quote_in_groups(message)
        )

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        sender = update.effective_user
        if message is None or sender is None:
            return
        if message.text is None and message.caption is None:
            return  # a service message (a pin, a join) or a sticker: nothing to answer
        scan = scan_links(message, allowed_hosts=self._allowed_hosts)
        links = scan.links
        if not links:
            # Something that looked like a link but may not be used gets its reason.
            words = texts.link_refused(scan.refused[0][1].value) if scan.refused else texts.NO_LINK
            await message.reply_text(words, parse_mode=None)
            return
        taken, skipped = links[: self._max_links], max(0, len(links) - self._max_links)
        user = UserInfo(id=sender.id, first_name=sender.first_name, username=sender.username)
        # Store first: once this returns, the tasks survive anything that happens next.
        submission = await self._service.submit(
            user,
            chat_id=message.chat_id,
            message_id=message.message_id,
            links=taken,
            exempt=self._access.is_admin(sender.id),
        )
        tasks = submission.tasks
        if not tasks:
            # Over a quota: nothing stored, no run started.
            await message.reply_text(
                self._quota_words(submission.allowance),
                parse_mode=None,
                reply_parameters=_reply_to(message),
            )
            return
        if not submission.new:
            # Replayed after a crash: the tasks exist and are under way; answer only if the
            # acknowledgement never went out.
            if any(task.ack_message_id is None for task in tasks):
                ack = await message.reply_text(
                    texts.accepted(tasks, skipped),
                    parse_mode=None,
                    reply_parameters=_reply_to(message),
                )
                for task in tasks:
                    await self._service.set_ack_message(task, ack.message_id)
            return
        over_quota = None
        if submission.refused:
            over_quota = texts.links_not_taken(
                submission.refused, self._quota_words(submission.allowance)
            )
        try:
            ack = await message.reply_text(
                texts.accepted(tasks, skipped, places=submission.places, over_quota=over_quota),
                parse_mode=None,
                reply_parameters=_reply_to(message),
            )
            for task in tasks:
                await self._service.set_ack_message(task, ack.message_id)
        finally:
            # After the acknowledgement, so a fast result never overtakes it; whatever happened
            # to the acknowledgement, the work goes on.
            self._service.start_all(tasks)

    async def tasks(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        user = await self._service.user(sender.id)
        recent = await self._service.recent_tasks(sender.id)
        await message.reply_text(texts.task_list(user, recent), parse_mode=None)

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return
        number = _the_number(context.args)
        if number is None:
            await message.reply_text(texts.STATUS_USAGE, parse_mode=None)
            return
        task = await self._service.task_of(sender.id, number)
        if task is None:
            await message.reply_text(texts.no_such_task(number), parse_mode=None)
            return
        await message.reply_text(
            texts.task_status(task, self._service.max_retries), parse_mode=None
        )

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        match = _RETRY_DATA.match(query.data or "")
        if match is None:
            await query.answer(texts.BUTTON_UNKNOWN)
            return
        decision = await self._service.retry(
            task_id=int(match.group(1)),
            user_id=query.from_user.id,
            exempt=self._access.is_admin(query.from_user.id),
        )
        if isinstance(decision, Allowance):
            # A Retry is a task for the quotas: the button stays for later.
            await query.answer(self._quota_words(decision), show_alert=True)
            return
        task = decision.task
        if decision.refusal is RetryRefusal.NOT_FOUND or task is None:
            # A forged button, or someone else's: say nothing about the task, change nothing.
            await query.answer(texts.BUTTON_NOT_YOURS)
            return
        if decision.refusal is RetryRefusal.BUSY:
            await query.answer(texts.busy(task))
            return
        if decision.refusal is RetryRefusal.NO_RETRIES_LEFT:
            await query.answer(texts.no_retries_left(task), show_alert=True)
        else:
            await query.answer(texts.retrying(task, self._service.max_retries))
        # Either way this button has done its work: the new outcome brings a fresh one.
        await self._remove_button(query.message)

    def _quota_words(self, allowance: Allowance) -> str:
        if allowance.bound_by is QuotaRefusal.DAILY_LIMIT:
            return texts.daily_limit(self._max_tasks_per_day, allowance.next_possible_at)
        if allowance.refusal is None:  # some links were taken, the rest would be too many
            return texts.active_limit(self._max_active_tasks)
        return texts.too_many_active(allowance.active)

    # --- admins ------------------------------------------------------------------------------

    async def _from_admin(self, update: Update) -> tuple[Message, int] | None:
        """The message and its admin sender; anyone else hears of no such command."""
        message, sender = update.effective_message, update.effective_user
        if message is None or sender is None:
            return None
        if not self._access.is_admin(sender.id):
            await message.reply_text(texts.UNKNOWN_COMMAND, parse_mode=None)
            return None
        return message, sender.id

    async def stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        admin = await self._from_admin(update)
        if admin is None:
            return
        message, _ = admin
        await message.reply_text(texts.stats(await collect_stats()), parse_mode=None)

    async def block(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._change_block(update, context, blocking=True)

    async def unblock(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._change_block(update, context, blocking=False)

    async def _change_block(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, *, blocking: bool
    ) -> None:
        admin = await self._from_admin(update)
        if admin is None:
            return
        message, admin_id = admin
        user_id = _the_number(context.args)
        if user_id is None:
            await message.reply_text(texts.BLOCK_USAGE, parse_mode=None)
            return
        if blocking and self._access.is_admin(user_id):
            await message.reply_text(texts.CANNOT_BLOCK_ADMIN, parse_mode=None)
            return
        if blocking:
            changed = await self._access.block(user_id, by=admin_id)
            answer = texts.blocked(user_id, changed)
        else:
            changed = await self._access.unblock(user_id, by=admin_id)
            answer = texts.unblocked(user_id, changed)
        log.info("admin %s %s user %s", admin_id, "blocked" if blocking else "unblocked", user_id)
        await message.reply_text(answer, parse_mode=None)

    @staticmethod
    async def _remove_button(message: object) -> None:
        if not isinstance(message, Message) or message.reply_markup is None:
            return
        try:
            await message.edit_reply_markup(reply_markup=None)
        except BadRequest as exc:
            # "Message is not modified" (already removed by a quick second press) is harmless.
            log.info("could not remove a Retry button: %s", exc.message)

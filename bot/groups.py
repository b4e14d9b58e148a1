"""Which updates the bot acts on, decided before any handler sees them.

In a group several bots and many people talk; the bot acts only on a message meant for it:
- a command addressed to it (``/help@this_bot``), or a bare command (``/help``) that replies
  to one of its messages; a command for another bot (``/help@other_bot``) is not;
- a message with a link that mentions it (an ``@this_bot`` mention, or a text mention of its
  user) or replies to one of its messages.
Everywhere, private chats too, it never acts on service messages (members joining, pins,
migrations, video chats...), messages from bots (anonymous admins and channels post as bots
too) or sent via an inline bot, edited messages and channel posts. Callback queries (the Retry
button) go through: the handler checks who pressed. Update kinds without a message are left
to whatever handles them.

`acts_on` is applied at intake (bot.intake), before anything else: what the bot does not act on
is dropped there (and counted as handled), so it never reaches a handler or counts against a
user's limits.
"""

from __future__ import annotations

import logging
from itertools import chain

from telegram import Chat, Message, MessageEntity, Update
from telegram.ext import filters

from bot.links import links_in

log = logging.getLogger(__name__)

_GROUP_TYPES = frozenset({Chat.GROUP, Chat.SUPERGROUP})


def acts_on(update: Update, *, bot_username: str, bot_id: int) -> bool:
    """Whether the bot's handlers should see this update at all."""
    if update.callback_query is not None:
        return True
    message = update.message
    if message is None:
        # An edited message, a channel post, a business message: never. Anything else
        # (no message in it) is not this gate's business.
        return update.effective_message is None
    if not from_a_person(message) or filters.StatusUpdate.ALL.check_update(update):
        return False
    if message.chat.type == Chat.PRIVATE:
        return True
    if message.chat.type in _GROUP_TYPES:
        return addressed_to_bot(message, bot_username=bot_username, bot_id=bot_id)
    return False


def from_a_person(message: Message) -> bool:
    """Not from a bot, not on behalf of a chat, not sent through an inline bot."""
    sender = message.from_user
    return (
        sender is not None
        and not sender.is_bot
        and message.sender_chat is None
        and message.via_bot is None
    )


def addressed_to_bot(message: Message, *, bot_username: str, bot_id: int) -> bool:
    """Whether a group message is meant for this bot (see the module's docstring)."""
    command = command_of(message)
    if command is not None:
        _name, target = command
        if target is not None:
            return target.lower() == bot_username.lower()
        return replies_to_bot(message, bot_id)
    if not links_in(message):
        return False
    return mentions_bot(message, bot_username=bot_username, bot_id=bot_id) or replies_to_bot(
        message, bot_id
    )


def command_of(message: Message) -> tuple[str, str | None] | None:
    """(command, bot it is addressed to or None) when the text starts with a command.

    The same test as PTB's CommandHandler: a bot_command entity at offset 0 of the text
    (captions are never commands).
    """
    if not message.text or not message.entities:
        return None
    first = message.entities[0]
    if first.type != MessageEntity.BOT_COMMAND or first.offset != 0:
        return None
    name, at, target = message.parse_entity(first)[1:].partition("@")
    return name, (target if at else None)


def mentions_bot(message: Message, *, bot_username: str, bot_id: int) -> bool:
    """An @username mention of the bot, or a text mention of its user, in the text or caption."""
    wanted: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    found = chain(
        message.parse_entities(wanted).items(), message.parse_caption_entities(wanted).items()
    )
    for entity, value in found:
        if entity.type == MessageEntity.MENTION and value[1:].lower() == bot_username.lower():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def replies_to_bot(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    return replied is not None and replied.from_user is not None and replied.from_user.id == bot_id

"""Update processing: one user's messages are answered in order, and a slow reply to one user
does not hold up another."""

from __future__ import annotations

import pytest

from bot.runtime import RunningBot
from simulators.telegram import FakeTelegram
from tests.conftest import OTHER_USER, Conversation, eventually

pytestmark = pytest.mark.asyncio


async def test_one_users_messages_are_answered_in_the_order_sent(
    bot: RunningBot, chat: Conversation
) -> None:
    # /tasks and /status query the database, /help and unknown commands do not: handled
    # concurrently, the quick ones would overtake.
    for text in ("/tasks", "/help", "/status 7", "/nonsense", "/tasks", "hello"):
        chat.send(text)

    replies = await chat.wait_for_messages(6)

    starts = [(reply.text or "").split("\n", 1)[0][:25] for reply in replies]
    assert starts == [
        "You have no tasks yet. Se",
        "Send me a link to a video",
        "You have no task #7. /tas",
        "I don't know that command",
        "You have no tasks yet. Se",
        "I could not find a video ",
    ]


async def test_a_slow_reply_to_one_user_does_not_hold_up_another(
    bot: RunningBot, chat: Conversation, telegram: FakeTelegram
) -> None:
    other = Conversation(telegram, user_id=OTHER_USER)
    telegram.delay_next("sendMessage", 1.5, before=True)
    chat.send("/help")

    async def first_reply_under_way() -> bool:
        return len(telegram.calls_of("sendMessage")) == 1

    await eventually(first_reply_under_way, what="the first reply reaching Telegram")
    other.send("/help")

    await other.wait_for_messages(1, timeout=1.0)  # answered while the first reply is held
    assert chat.messages == []
    await chat.wait_for_messages(1)

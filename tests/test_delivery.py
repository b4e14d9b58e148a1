"""Delivering long texts: none over Telegram's limit, none lost, a file past a few messages."""

from __future__ import annotations

import re

import pytest

from bot.runtime import RunningBot
from bot.splitting import MESSAGE_LIMIT, utf16_len
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import Task
from tests.conftest import USER, Conversation, delivered, eventually, settled, text_buttons

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


def _words(text: str) -> str:
    """Text without white space: Telegram trims each message, the words must all be there."""
    return re.sub(r"\s+", "", text)


async def test_a_long_text_is_split_into_messages_within_the_limit(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    paragraphs = [
        f"第{n}段：这是视频里说的话，讲得很清楚。Paragraph {n} of the talk 🎬, said plainly."
        for n in range(130)
    ]
    original = "\n\n".join(paragraphs)
    coze.outcome_for = lambda url: WorkflowOutcome(text=original)
    chat.send("https://v.douyin.com/long/")
    await delivered()
    messages = chat.messages
    parts = messages[1:]

    assert utf16_len(original) > 2 * MESSAGE_LIMIT  # really needs three messages
    assert len(parts) == 3
    assert all(utf16_len(part.text or "") <= MESSAGE_LIMIT for part in parts)
    assert all(part.parse_mode is None for part in parts)
    joined = "".join(part.text or "" for part in parts)
    header = messages[1].text.split("\n", 1)[0] if messages[1].text else ""
    assert _words(joined) == _words(header) + _words(original)
    assert [bool(part.buttons()) for part in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[0].reply_to_message_id is not None


async def test_a_huge_text_is_sent_as_a_document_with_a_preview(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    chat.send("https://v.douyin.com/huge/")
    await delivered()
    _, document = chat.messages

    (run,) = coze.runs.values()
    assert len(chat.messages) == 2
    assert document.document is not None
    assert document.document.decode("utf-8") == run.outcome.text
    assert document.filename == "task-1.txt"
    assert document.text is not None and utf16_len(document.text) <= 1024
    assert run.outcome.text[:50] in document.text  # the preview
    assert document.buttons() == text_buttons()
    # While it uploaded, the chat showed "sending a file...".
    assert telegram.chat_actions(USER) == ["upload_document"]


async def test_emoji_and_chinese_at_the_limit_are_counted_in_utf16(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    # 4000 emoji are 8000 UTF-16 units: two messages' worth though only 4000 characters.
    text = "😀" * 4000 + "\n\n" + "中文" * 100
    coze.outcome_for = lambda url: WorkflowOutcome(text=text)
    chat.send("https://v.douyin.com/emoji/")
    await delivered()
    parts = chat.messages[1:]
    assert len(parts) == 3
    assert all(utf16_len(part.text or "") <= MESSAGE_LIMIT for part in parts)
    assert _words("".join(part.text or "" for part in parts)).endswith(_words(text))


async def test_a_user_who_blocked_the_bot_is_not_retried_forever(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text="words", duration=0.3)
    chat.send("https://v.douyin.com/blocked/")
    await chat.wait_for_messages(1)
    telegram.block(chat.user_id)

    async def given_up() -> bool:
        return (await Task.get(id=1)).undeliverable

    await eventually(given_up, what="delivery given up")
    sends = len(telegram.calls_of("sendMessage"))
    await settled(1.2)  # longer than the delivery scan interval
    assert len(telegram.calls_of("sendMessage")) == sends

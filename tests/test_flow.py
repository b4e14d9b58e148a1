"""The whole flow through real sockets: pasted share text -> acknowledgement -> text + Retry."""

from __future__ import annotations

import pytest

from bot.runtime import RunningBot
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram
from storage import Task, TaskState, User
from tests.conftest import SHARE_TEXT, USER, Conversation, eventually, settled, text_buttons

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


async def test_share_text_gets_acknowledged_then_text_with_retry_button(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    sent = chat.send(SHARE_TEXT)

    ack, result = await chat.wait_for_messages(2)

    assert ack.reply_to_message_id == sent["message_id"]
    assert ack.text is not None and "#1" in ack.text
    (run,) = coze.runs.values()
    assert run.parameters["url"] == "https://v.douyin.com/iRNBho6u/"
    assert result.reply_to_message_id == sent["message_id"]
    assert result.text is not None
    assert run.outcome.text.strip() in result.text
    assert result.parse_mode is None
    assert result.buttons() == text_buttons()

    async def delivered() -> bool:
        return (await Task.get(id=1)).notification_sent

    await eventually(delivered, what="the outcome marked delivered")
    task = await Task.get(id=1)
    assert task.state == TaskState.COMPLETED
    assert task.callback_received
    user = await User.get(id=USER)
    assert user.extract_count == 1
    assert user.last_extract_at is not None


async def test_each_distinct_link_becomes_a_task_up_to_the_limit(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send(
        "two videos: https://v.douyin.com/aaa/ and https://b23.tv/bbb "
        "again https://v.douyin.com/aaa/ then https://v.kuaishou.com/ccc "
        "and https://xhslink.com/ddd"
    )

    messages = await chat.wait_for_messages(4)  # one acknowledgement, three texts

    ack = messages[0]
    assert ack.text is not None
    assert "#1, #2, #3" in ack.text and "1 more link skipped" in ack.text
    urls = sorted(run.parameters["url"] for run in coze.runs.values())
    assert urls == ["https://b23.tv/bbb", "https://v.douyin.com/aaa/", "https://v.kuaishou.com/ccc"]
    await settled()
    assert len(chat.messages) == 4


async def test_link_in_a_caption_and_a_text_link_are_found(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    chat.send("look 看这个 https://v.douyin.com/cap/", as_caption=True)
    await chat.wait_for_messages(2)
    chat.send(
        "this video",
        entities=[{"type": "text_link", "offset": 5, "length": 5, "url": "https://b23.tv/xyz"}],
    )
    await chat.wait_for_messages(4)
    urls = sorted(run.parameters["url"] for run in coze.runs.values())
    assert urls == ["https://b23.tv/xyz", "https://v.douyin.com/cap/"]


async def test_unmarked_link_in_text_is_found_by_the_fallback(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send("复制打开 v.douyin.com/plain/ 看看", auto_entities=False)
    await chat.wait_for_messages(2)
    (run,) = coze.runs.values()
    assert run.parameters["url"] == "https://v.douyin.com/plain/"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hello there", "could not find a video link"),
        ("http://127.0.0.1:8080/admin", "private or local address"),
        ("see localhost/video", "could not find a video link"),
        ("7.43 复制打开抖音", "could not find a video link"),
    ],
)
async def test_message_without_a_usable_link_gets_an_explanation_and_no_task(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, text: str, words: str
) -> None:
    sent = chat.send(text)

    (reply,) = await chat.wait_for_messages(1)

    assert reply.text is not None and words in reply.text
    assert reply.reply_to_message_id is None or reply.reply_to_message_id == sent["message_id"]
    await settled()
    assert coze.runs == {}
    assert await Task.all().count() == 0


async def test_start_and_help_explain_the_bot(bot: RunningBot, chat: Conversation) -> None:
    chat.send("/start")
    chat.send("/help")
    chat.send("/nonsense")
    start, help_, unknown = await chat.wait_for_messages(3)
    for message in (start, help_):
        assert message.text is not None
        assert "Douyin" in message.text and "/tasks" in message.text
    assert unknown.text is not None and "/help" in unknown.text


async def test_tasks_and_status_show_the_users_own_tasks(
    bot: RunningBot, chat: Conversation, telegram: FakeTelegram
) -> None:
    chat.send("https://v.douyin.com/one/")
    chat.send("https://v.douyin.com/fail/")
    await chat.wait_for_messages(4)

    async def both_settled() -> bool:
        return await Task.filter(notification_sent=True).count() == 2

    await eventually(both_settled, what="both tasks delivered")

    chat.send("/tasks")
    (listing,) = (await chat.wait_for_messages(5))[4:]
    assert listing.text is not None
    assert "#1 done" in listing.text and "#2 failed" in listing.text
    assert "Texts extracted: 1" in listing.text

    chat.send("/status 2")
    (status,) = (await chat.wait_for_messages(6))[5:]
    assert status.text is not None
    assert "Task #2: failed" in status.text and "Retries used: 0 of 2" in status.text
    assert "Why: The video was not found." in status.text

    other = Conversation(telegram, user_id=2002)
    other.send("/status 1")
    other.send("/status")
    (not_yours, usage) = await other.wait_for_messages(2)
    assert not_yours.text == "You have no task #1. /tasks lists yours."
    assert usage.text is not None and "/status 12" in usage.text


async def test_an_internal_error_gets_an_apology_not_silence(
    bot: RunningBot, chat: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(bot.service, "submit", broken)
    chat.send("https://v.douyin.com/anything/")
    (reply,) = await chat.wait_for_messages(1)
    assert reply.text == "Sorry, something went wrong on my side. Please try again in a moment."

"""In groups the bot acts only on what is meant for it; bots and service messages never.

The fake's bot has privacy mode off (as an admin bot has): it receives every message of the
group, so what the bot ignores below it ignores by itself, not because Telegram kept it away.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from telegram import Update

from bot import texts
from bot.groups import acts_on
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram, SentMessage
from storage import InboxUpdate
from tests.conftest import (
    OTHER_USER,
    SHARE_TEXT,
    USER,
    Conversation,
    eventually,
    make_settings,
    settled,
    text_buttons,
)

pytestmark = pytest.mark.asyncio

GROUP = -4001234567
SUPERGROUP = -1001234567890
BOT = "link2text_test_bot"
BOT_ID = 123456
SHARE_LINK = "https://v.douyin.com/iRNBho6u/"


class Group:
    """A group with the bot in it, as its members see it."""

    def __init__(self, telegram: FakeTelegram, group_id: int = GROUP) -> None:
        self.telegram = telegram
        self.id = group_id

    def send(self, user_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        return self.telegram.user_sends_in_group(self.id, user_id, text, **kwargs)

    def event(self, kind: str, value: Any = None, *, user_id: int = USER) -> dict[str, Any]:
        return self.telegram.group_event(self.id, kind, value, user_id=user_id)

    @property
    def messages(self) -> list[SentMessage]:
        return self.telegram.messages(self.id)

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        await self.telegram.wait_for(lambda: len(self.messages) >= count, timeout)
        return self.messages

    async def answer_to(self, query_id: str) -> dict[str, Any]:
        await self.telegram.wait_for(lambda: query_id in self.telegram.callback_answers)
        return self.telegram.callback_answers[query_id]


@pytest.fixture
def group(telegram: FakeTelegram) -> Group:
    return Group(telegram)


def quoted(telegram: FakeTelegram, message: SentMessage) -> dict[str, Any]:
    """The reply_parameters the bot sent with that message."""
    (call,) = [
        params
        for params in telegram.calls_of("sendMessage")
        if params.get("text") == message.text and params.get("chat_id") == message.chat_id
    ]
    reply: dict[str, Any] = call["reply_parameters"]
    return reply


async def all_updates_handled() -> None:
    async def check() -> bool:
        return not await InboxUpdate.filter(handled=False).exists()

    await eventually(check, what="every update marked handled")


async def test_a_link_not_addressed_to_the_bot_gets_nothing_a_mention_gets_the_text(
    bot: RunningBot, group: Group, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    group.send(USER, SHARE_TEXT)
    group.send(OTHER_USER, "https://b23.tv/abc @someone_else")
    group.send(OTHER_USER, f"@{BOT} no link here, just hello")
    await settled()
    assert group.messages == [] and coze.runs == {}

    sent = group.send(USER, f"@{BOT} {SHARE_TEXT}")

    ack, result = await group.wait_for_messages(2)
    assert ack.text is not None and "Task #1 " in ack.text  # nothing before made a task
    assert ack.reply_to_message_id == sent["message_id"]
    assert quoted(telegram, ack) == {
        "message_id": sent["message_id"],
        "allow_sending_without_reply": True,
    }
    assert result.reply_to_message_id == sent["message_id"]
    assert result.buttons() == text_buttons()
    (run,) = coze.runs.values()
    assert run.parameters["url"] == SHARE_LINK  # the mention next to it changes nothing
    assert result.text is not None and run.outcome.text.strip() in result.text
    assert telegram.messages(USER) == []  # all of it in the group
    await all_updates_handled()


async def test_a_reply_to_the_bots_message_with_a_link_is_acted_on(
    bot: RunningBot, group: Group, coze: FakeCoze
) -> None:
    first = group.send(USER, f"@{BOT} https://b23.tv/first")
    ack, result = await group.wait_for_messages(2)
    other = group.send(OTHER_USER, "what is this?")
    group.send(USER, "https://b23.tv/not-for-the-bot", reply_to_message_id=other["message_id"])
    group.send(OTHER_USER, "thanks!", reply_to_message_id=result.message_id)
    await settled()
    assert len(group.messages) == 2 and len(coze.runs) == 1

    reply = group.send(
        OTHER_USER, "and this one https://b23.tv/second", reply_to_message_id=ack.message_id
    )

    _, _, second_ack, _ = await group.wait_for_messages(4)
    # The other member's first task: their own #1.
    assert second_ack.text is not None and "Task #1 " in second_ack.text
    assert second_ack.reply_to_message_id == reply["message_id"]
    assert first["message_id"] != reply["message_id"]
    urls = sorted(run.parameters["url"] for run in coze.runs.values())
    assert urls == ["https://b23.tv/first", "https://b23.tv/second"]


async def test_a_text_mention_and_a_mention_in_a_caption(
    bot: RunningBot, group: Group, coze: FakeCoze
) -> None:
    bot_user = {"id": BOT_ID, "is_bot": True, "first_name": "Link2Text Test Bot"}
    group.send(
        USER,
        "Link2Text, 看这个 https://b23.tv/named",
        entities=[{"type": "text_mention", "offset": 0, "length": 9, "user": bot_user}],
    )
    group.send(USER, f"@{BOT.upper()} https://b23.tv/photo", as_caption=True)
    await group.wait_for_messages(4)
    urls = sorted(run.parameters["url"] for run in coze.runs.values())
    assert urls == ["https://b23.tv/named", "https://b23.tv/photo"]


async def test_only_commands_for_this_bot_are_answered(
    bot: RunningBot, group: Group, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    group.send(USER, "/help")
    group.send(USER, "/help@other_bot")
    group.send(USER, "/start@other_bot https://b23.tv/x")
    group.send(USER, "/status 1")
    group.send(USER, "/tasks@other_bot")
    await settled()
    assert group.messages == [] and coze.runs == {}

    asked = group.send(USER, f"/help@{BOT}")
    (help_answer,) = await group.wait_for_messages(1)
    assert help_answer.text == texts.DEFAULT.help
    assert quoted(telegram, help_answer) == {
        "message_id": asked["message_id"],
        "allow_sending_without_reply": True,
    }
    tasks = group.send(USER, "/tasks@Link2Text_Test_Bot")
    status = group.send(USER, f"/status@{BOT} 3")
    bare = group.send(OTHER_USER, "/help", reply_to_message_id=help_answer.message_id)
    _, tasks_answer, status_answer, bare_answer = await group.wait_for_messages(4)
    assert tasks_answer.reply_to_message_id == tasks["message_id"]
    assert status_answer.reply_to_message_id == status["message_id"]
    assert status_answer.text == texts.DEFAULT.no_such_task(3)
    assert (bare_answer.reply_to_message_id, bare_answer.text) == (
        bare["message_id"],
        texts.DEFAULT.help,
    )
    await settled()
    assert len(group.messages) == 4 and coze.runs == {}


async def test_service_messages_get_no_answer_and_the_bot_keeps_working(
    bot: RunningBot, group: Group, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    pinned = group.send(USER, f"@someone look https://b23.tv/pinned @{BOT}x")
    group.event("group_chat_created")
    group.event("new_chat_members", user_id=OTHER_USER)
    group.event("new_chat_members", [BOT_ID, 3003])
    group.event("left_chat_member", 3003)
    group.event("pinned_message", pinned["message_id"])
    group.event("new_chat_title", "Videos")
    group.event("video_chat_started")
    group.event("video_chat_ended")
    group.event("message_auto_delete_timer_changed")
    upgraded = group.event("migrate_to_chat_id")  # and migrate_from_chat_id in the supergroup
    forum = Group(telegram, SUPERGROUP)
    forum.send(USER, "hi")
    forum.event("forum_topic_created")
    # A pin in a private chat is a service message too.
    telegram.queue_update(
        {
            "message": {
                "message_id": 77,
                "from": {"id": USER, "is_bot": False, "first_name": "Ann"},
                "chat": {"id": USER, "first_name": "Ann", "type": "private"},
                "date": int(time.time()),
                "pinned_message": {
                    "message_id": 76,
                    "from": {"id": USER, "is_bot": False, "first_name": "Ann"},
                    "chat": {"id": USER, "first_name": "Ann", "type": "private"},
                    "date": int(time.time()),
                    "text": "https://b23.tv/pinned",
                },
            }
        }
    )
    await settled()
    assert group.messages == [] and forum.messages == [] and telegram.messages(USER) == []
    assert coze.runs == {}

    supergroup = Group(telegram, upgraded["migrate_to_chat_id"])
    sent = supergroup.send(USER, f"@{BOT} https://b23.tv/after")
    ack, _ = await supergroup.wait_for_messages(2)
    assert ack.text is not None and "Task #1 " in ack.text
    assert ack.reply_to_message_id == sent["message_id"]
    forum.send(OTHER_USER, f"@{BOT} https://b23.tv/forum")
    await forum.wait_for_messages(2)
    await all_updates_handled()


async def test_messages_from_bots_get_no_answer(
    bot: RunningBot, group: Group, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    supergroup = Group(telegram, SUPERGROUP)
    supergroup.send(USER, f"@{BOT} https://b23.tv/anon", anonymous_admin=True)
    inline_bot = {"id": 888, "is_bot": True, "first_name": "Vid", "username": "vid"}
    supergroup.send(USER, f"@{BOT} https://b23.tv/via", via_bot=inline_bot)
    # Telegram shows a bot no other bot's messages (the fake does not deliver them either);
    # were one to arrive, it must still be ignored.
    other = telegram.other_bot_sends_in_group(SUPERGROUP, 777, f"@{BOT} https://b23.tv/bot")
    assert telegram.queue_update({"message": {**other, "message_id": other["message_id"] + 1000}})
    # Via an inline bot in a private chat: ignored too.
    telegram.queue_update(
        {
            "message": {
                "message_id": 99,
                "from": {"id": USER, "is_bot": False, "first_name": "Ann"},
                "chat": {"id": USER, "first_name": "Ann", "type": "private"},
                "date": int(time.time()),
                "via_bot": inline_bot,
                "text": "https://b23.tv/private-via",
                "entities": [{"type": "url", "offset": 0, "length": 26}],
            }
        }
    )
    await settled()
    assert supergroup.messages == [] and telegram.messages(USER) == [] and coze.runs == {}

    supergroup.send(USER, f"@{BOT} https://b23.tv/person")
    ack, _ = await supergroup.wait_for_messages(2)
    assert ack.text is not None and "Task #1 " in ack.text
    assert [run.parameters["url"] for run in coze.runs.values()] == ["https://b23.tv/person"]


async def test_a_private_chat_works_as_before(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    sent = chat.send(SHARE_TEXT)
    ack, result = await chat.wait_for_messages(2)
    assert ack.reply_to_message_id == sent["message_id"]
    assert result.buttons() == text_buttons()
    chat.send("/help")
    chat.send("no link at all")
    _, _, help_answer, no_link = await chat.wait_for_messages(4)
    assert (help_answer.text, help_answer.reply_to_message_id) == (texts.DEFAULT.help, None)
    assert no_link.text == texts.DEFAULT.no_link
    assert [run.parameters["url"] for run in coze.runs.values()] == [SHARE_LINK]


async def test_only_the_owner_may_press_retry_in_a_group(
    bot: RunningBot, group: Group, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    group.send(USER, f"@{BOT} https://b23.tv/mine")
    group.event("new_chat_members", user_id=OTHER_USER)
    _, result = await group.wait_for_messages(2)

    query = telegram.user_presses(OTHER_USER, result, "retry:1")
    answer = await group.answer_to(query)
    assert answer["text"] == texts.DEFAULT.button_not_yours
    await settled()
    assert len(coze.runs) == 1
    assert result.buttons() == text_buttons()  # still there for its owner
    assert len(group.messages) == 2

    owner_query = telegram.user_presses(USER, result, "retry:1")
    assert (await group.answer_to(owner_query))["text"].startswith("Retrying task #1 ")
    await telegram.wait_for(lambda: len(coze.runs) == 2)
    assert result.buttons() == []


async def test_with_privacy_mode_on_mentions_and_commands_still_work(
    telegram: FakeTelegram, group: Group, coze: FakeCoze, bot: RunningBot
) -> None:
    telegram.privacy_mode = True
    group.send(USER, "https://b23.tv/unseen")  # not delivered at all now
    group.send(USER, f"/help@{BOT}")
    group.send(USER, f"@{BOT} https://b23.tv/seen")
    help_answer, ack, _ = await group.wait_for_messages(3)
    assert help_answer.text == texts.DEFAULT.help
    assert ack.text is not None and "Task #1 " in ack.text
    assert [run.parameters["url"] for run in coze.runs.values()] == ["https://b23.tv/seen"]


# ------------------------------------------------------------------ the rule, case by case

LINK = "https://b23.tv/x"
ANN = {"id": USER, "is_bot": False, "first_name": "Ann"}
A_BOT = {"id": 9, "is_bot": True, "first_name": "B", "username": "b_bot"}
SUPER = {"id": SUPERGROUP, "title": "G", "type": "supergroup"}
PRIVATE = {"id": USER, "first_name": "Ann", "type": "private"}
CHANNEL = {"id": -1009, "title": "C", "type": "channel"}
BOTS_MESSAGE = {"message_id": 4, "from": {**A_BOT, "id": BOT_ID}, "chat": SUPER, "date": 1}


def text_message(text: str, *spans: tuple[str, str], **fields: Any) -> dict[str, Any]:
    """A message whose entities are (type, the text they cover), offsets in UTF-16 units."""
    entities = []
    for kind, part in spans:
        offset = len(text[: text.index(part)].encode("utf-16-le")) // 2
        length = len(part.encode("utf-16-le")) // 2
        entities.append({"type": kind, "offset": offset, "length": length})
    message = {"message_id": 5, "from": ANN, "chat": SUPER, "date": 1, "text": text}
    return {**message, "entities": entities, **fields}


MENTIONED = text_message(f"😀 @{BOT} {LINK}", ("mention", f"@{BOT}"), ("url", LINK))


@pytest.mark.parametrize(
    ("update", "acted_on"),
    [
        ({"message": MENTIONED}, True),
        ({"message": text_message(f"{LINK} @{BOT}", ("url", LINK), ("mention", f"@{BOT}"))}, True),
        ({"message": text_message(f"@{BOT}", ("mention", f"@{BOT}"))}, False),  # no link
        ({"message": text_message(LINK, ("url", LINK))}, False),  # not addressed
        ({"message": text_message(f"@b_bot {LINK}", ("mention", "@b_bot"), ("url", LINK))}, False),
        ({"message": text_message(LINK, ("url", LINK), reply_to_message=BOTS_MESSAGE)}, True),
        ({"message": text_message("thanks", reply_to_message=BOTS_MESSAGE)}, False),
        ({"message": text_message(f"/status@{BOT} 3", ("bot_command", f"/status@{BOT}"))}, True),
        ({"message": text_message("/status@b_bot 3", ("bot_command", "/status@b_bot"))}, False),
        ({"message": text_message("/status 3", ("bot_command", "/status"))}, False),
        (
            {
                "message": text_message(
                    "/status 3", ("bot_command", "/status"), reply_to_message=BOTS_MESSAGE
                )
            },
            True,
        ),
        ({"message": {**MENTIONED, "from": A_BOT}}, False),
        ({"message": {**MENTIONED, "via_bot": A_BOT}}, False),
        ({"message": {**MENTIONED, "sender_chat": CHANNEL}}, False),
        ({"edited_message": {**MENTIONED, "edit_date": 2}}, False),
        ({"channel_post": {**MENTIONED, "chat": CHANNEL, "from": None}}, False),
        ({"message": {**text_message("hi"), "chat": PRIVATE}}, True),
        ({"message": {**text_message("hi"), "chat": PRIVATE, "via_bot": A_BOT}}, False),
        ({"message": {**text_message("hi"), "chat": PRIVATE, "from": A_BOT}}, False),
        (
            {
                "message": {
                    "message_id": 6,
                    "from": ANN,
                    "chat": PRIVATE,
                    "date": 1,
                    "pinned_message": {**MENTIONED, "chat": PRIVATE},
                }
            },
            False,
        ),
        (
            {
                "callback_query": {
                    "id": "1",
                    "from": ANN,
                    "chat_instance": "1",
                    "data": "retry:1",
                    "message": BOTS_MESSAGE,
                }
            },
            True,
        ),
    ],
)
async def test_the_rule(update: dict[str, Any], acted_on: bool) -> None:
    payload = {
        kind: {k: v for k, v in body.items() if v is not None} for kind, body in update.items()
    }
    parsed = Update.de_json({"update_id": 1, **payload}, None)
    assert acts_on(parsed, bot_username=BOT.upper(), bot_id=BOT_ID) is acted_on


async def test_group_chatter_never_counts_against_the_message_limit_or_the_allow_list(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    settings = make_settings(
        database_url,
        telegram,
        coze,
        limits={"max_messages_per_user_per_minute": 3},
        access={"allowed_users": [OTHER_USER]},
    )
    async with running_bot(settings):
        for n in range(6):
            telegram.user_sends_in_group(GROUP, USER, f"just chatting {n}")
        telegram.group_event(GROUP, "new_chat_members", user_id=USER)
        await settled()
        assert telegram.messages(GROUP) == []
        telegram.user_sends_in_group(GROUP, OTHER_USER, f"@{BOT} https://v.douyin.com/ok/")
        await telegram.wait_for(lambda: len(telegram.messages(GROUP)) >= 2, 10.0)

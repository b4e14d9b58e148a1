"""Chinese and English, per user: from Telegram's language, or the user's /lang choice."""

from __future__ import annotations

import pytest

from bot import texts
from bot.config import Settings
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import User
from tests.conftest import OTHER_USER, USER, Conversation, make_settings

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

ZH = texts.for_language("zh")
EN = texts.for_language("en")


def chinese(telegram: FakeTelegram, user: int = USER) -> Conversation:
    conversation = Conversation(telegram, user)
    real_send = conversation.send
    conversation.send = lambda text, **kw: real_send(text, language_code="zh-hans", **kw)  # type: ignore[method-assign]
    return conversation


async def test_a_chinese_user_reads_chinese_from_start_on_and_an_english_user_english(
    bot: RunningBot, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(status="Fail", error_message="video deleted")
    zh, en = chinese(telegram), Conversation(telegram, OTHER_USER)
    zh.send("/start")
    en.send("/start")
    (zh_start,) = await zh.wait_for_messages(1)
    (en_start,) = await en.wait_for_messages(1)
    assert zh_start.text == ZH.start and "你好" in zh_start.text
    assert en_start.text == EN.start
    zh.send("https://v.douyin.com/zh-video/")
    ack, failure = (await zh.wait_for_messages(3))[1:]
    assert ack.text is not None and ack.text.startswith("收到！任务 #1")
    assert failure.text is not None and failure.text.startswith("任务 #1 失败：没有找到这个视频")
    assert failure.buttons()[0][0] == "重试"
    zh.send("hello")
    no_link = (await zh.wait_for_messages(4))[3]
    assert no_link.text == ZH.no_link
    zh.send("/nonsense")
    assert (await zh.wait_for_messages(5))[4].text == ZH.unknown_command


async def test_lang_switches_and_is_remembered_after_a_restart(
    settings: Settings, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    zh = chinese(telegram)
    async with running_bot(settings):
        zh.send("/lang")
        (menu,) = await zh.wait_for_messages(1)
        assert menu.text == ZH.choose_language
        assert menu.buttons() == [("中文", "l:zh"), ("English", "l:en")]
        forged = await zh.answer_to(zh.press(menu, "l:fr"))  # a language the bot lacks
        assert forged["text"] == ZH.button_unknown
        assert (await User.get_or_none(id=USER)) is None or (
            await User.get(id=USER)
        ).language is None
        answer = await zh.answer_to(zh.press(menu, "l:en"))
        assert answer["text"] == EN.language_set
        zh.send("/help")
        assert (await zh.wait_for_messages(2))[1].text == EN.help
        assert (await User.get(id=USER)).language == "en"
    async with running_bot(settings):
        zh.send("/help")  # Telegram still says Chinese; the choice wins
        assert (await zh.wait_for_messages(3))[2].text == EN.help


async def test_a_delivered_text_is_in_the_language_of_its_user(
    bot: RunningBot, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text="视频里说的话。", duration=0.3)
    zh = chinese(telegram)
    zh.send("https://v.douyin.com/abc/")
    text = (await zh.wait_for_messages(2))[1]
    assert text.text is not None
    assert text.text.startswith("任务 #1 - https://v.douyin.com/abc/ 的文字")
    assert [label for label, _ in text.buttons()] == ["重试", "以文件发送"]


async def test_the_command_menu_and_description_are_set_in_both_languages(
    bot: RunningBot, telegram: FakeTelegram
) -> None:
    default = [c["command"] for c in telegram.commands_for(None)]
    assert default == ["help", "tasks", "status", "get", "find", "settings", "lang"]
    for language, words in (("zh", ZH), ("en", EN)):
        menu = telegram.commands_for(language)
        assert [(c["command"], c["description"]) for c in menu] == words.commands()
        assert telegram.description_for(language) == words.description
        assert telegram.short_description_for(language) == words.short_description
    assert telegram.commands_for("zh")[0]["description"] == "使用说明"
    assert telegram.description_for(None) == EN.description


async def test_each_user_has_their_own_task_numbers(
    bot: RunningBot, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    ann.send("https://v.douyin.com/a1/ https://v.douyin.com/a2/")
    await ann.wait_for_messages(3)
    bob.send("https://v.douyin.com/b1/")
    bob_ack = (await bob.wait_for_messages(2))[0]
    assert bob_ack.text is not None and "Task #1 " in bob_ack.text
    bob.send("/status 1")
    status = (await bob.wait_for_messages(3))[2]
    assert status.text is not None and "https://v.douyin.com/b1/" in status.text
    bob.send("/status 2")  # Ann has a #2; Bob has not
    assert (await bob.wait_for_messages(4))[3].text == EN.no_such_task(2)


async def test_new_buttons_name_the_owner_and_old_ones_still_work(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    """A Retry button sent before the per-user numbers carries the task id: still honoured."""
    async with running_bot(make_settings(database_url, telegram, coze)):
        chat.send("https://v.douyin.com/old-button/")
        text = (await chat.wait_for_messages(2))[1]
        answer = await chat.answer_to(chat.press(text, "retry:1"))
        assert answer["text"].startswith("Retrying task #1")
        await chat.wait_for_messages(3)
    assert len(coze.runs) == 2

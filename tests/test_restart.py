"""Starting on a database left by a process that died: nothing accepted is lost."""

from __future__ import annotations

import time

import pytest

from bot.config import Settings
from bot.runtime import running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import InboxUpdate, Task, TaskState, open_database, repository
from tests.conftest import USER, Conversation, delivered, eventually, make_settings, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


async def test_pending_tasks_are_started_and_unsent_outcomes_sent_after_a_restart(
    settings: Settings, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send("hello")  # the chat exists for the fake Telegram
    # What the dead process left: a task stored but never started, and an outcome stored
    # but never sent.
    async with open_database(settings.storage.database_url):
        await repository.upsert_user(USER, "Ann", None)
        never_started, unsent = await repository.create_tasks(
            user_id=USER,
            chat_id=USER,
            request_message_id=1,
            links=[
                ("https://v.douyin.com/left/", "run-left-pending"),
                ("https://v.douyin.com/unsent/", "run-unsent"),
            ],
        )
        await Task.filter(id=unsent.id).update(state=TaskState.COMPLETED, result_text="kept words")

    async with running_bot(settings):
        await delivered(unsent.id)
        await delivered(never_started.id)

    texts = [message.text or "" for message in chat.messages]
    assert sum("kept words" in text for text in texts) == 1
    assert sum("text of https://v.douyin.com/left/" in text for text in texts) == 1
    assert len(coze.runs_for_task("run-left-pending")) == 1


async def test_stopping_hands_back_a_start_waiting_to_retry_and_a_restart_finishes_it(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    settings = make_settings(database_url, telegram, coze, coze={"start_backoff_seconds": 30.0})
    coze.fail_next_start(4009, "busy, says the test")
    async with running_bot(settings):
        chat.send("https://v.douyin.com/busy/")
        await coze.wait_for(lambda: coze.start_calls == 1)
        stopping_from = time.monotonic()
    assert time.monotonic() - stopping_from < 4.0  # not the 30 s pause, nor a 5 s grace
    async with open_database(settings.storage.database_url):
        assert (await Task.get(id=1)).state == TaskState.PENDING  # handed back, not failed

    async with running_bot(settings):
        await delivered()
    assert coze.start_calls == 2
    assert sum("Task #1 - text of" in (m.text or "") for m in chat.messages) == 1


async def test_stopping_while_telegram_asks_to_wait_keeps_the_outcome_for_the_restart(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    settings = make_settings(database_url, telegram, coze)
    coze.outcome_for = lambda url: WorkflowOutcome(text="kept for later", duration=0.3)
    async with running_bot(settings):
        chat.send("https://v.douyin.com/throttled/")
        await chat.wait_for_messages(1)
        telegram.fail_next(
            "sendMessage", status=429, description="Too Many Requests", retry_after=30
        )

        async def refused() -> bool:
            return len(telegram.calls_of("sendMessage")) == 2

        await eventually(refused, what="the outcome's send refused with 429")
        stopping_from = time.monotonic()
    assert time.monotonic() - stopping_from < 4.0

    async with running_bot(settings):
        await delivered()
        task = await Task.get(id=1)
    assert not task.resent_after_crash  # nothing was on the wire when it stopped
    assert sum("kept for later" in (m.text or "") for m in chat.messages) == 1


async def test_a_run_that_finished_while_the_bot_was_down_is_settled_after_restart(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    settings = make_settings(database_url, telegram, coze, tasks={"reconcile_after_seconds": 0.3})
    coze.callback_retries = 0
    coze.outcome_for = lambda url: WorkflowOutcome(text="done while down", duration=0.5)
    async with running_bot(settings):
        chat.send("https://v.douyin.com/down/")
        await chat.wait_for_messages(1)
        await coze.wait_for(lambda: len(coze.runs) == 1)
    await coze.drain()  # the workflow finished and its callback found nobody listening
    (run,) = coze.runs.values()
    assert run.callback_replies == [0]

    async with running_bot(settings):
        await delivered()
    assert sum("done while down" in (m.text or "") for m in chat.messages) == 1


async def test_updates_handled_before_a_restart_are_not_handled_again(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    settings = make_settings(database_url, telegram, coze)
    async with running_bot(settings):

        async def polling() -> bool:
            return bool(telegram.calls_of("getUpdates"))

        await eventually(polling, what="the bot polling")
        # The getUpdates call after the next batch, the one whose offset would tell Telegram
        # that the batch arrived, never gets through: Telegram still holds the batch.
        telegram.delay_next("getUpdates", 30.0, before=True)
        chat.send("/help")
        await chat.wait_for_messages(1)
        await settled(0.3)
    async with running_bot(settings):
        await settled(1.0)
    assert len(chat.messages) == 1  # the help, once: the restart resumed after the stored batch


async def test_an_update_replayed_after_a_crash_makes_no_second_task_or_answer(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    settings = make_settings(database_url, telegram, coze)
    async with running_bot(settings):
        chat.send("https://v.douyin.com/replayed/")
        await delivered()
    # As if the process had died after handling the link but before recording that it had.
    async with open_database(settings.storage.database_url):
        assert await InboxUpdate.filter(handled=True).update(handled=False) == 1

    async with running_bot(settings):
        await eventually(_all_handled, what="the replayed update handled")
        await settled(0.5)
        tasks = await Task.all().count()
    assert tasks == 1
    assert len(chat.messages) == 2  # one acknowledgement, one text
    assert len(coze.runs) == 1


async def _all_handled() -> bool:
    return not await InboxUpdate.filter(handled=False).exists()

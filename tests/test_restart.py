"""Starting on a database left by a process that died: nothing accepted is lost."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.runtime import running_bot
from simulators.coze import FakeCoze
from storage import Task, TaskState, open_database, repository
from tests.conftest import USER, Conversation, delivered

pytestmark = pytest.mark.asyncio


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

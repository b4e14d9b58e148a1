"""Retry: owner only, at most max_retries, one run per press however fast the presses."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from bot.runtime import RunningBot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import Task, TaskState, User, repository
from tests.conftest import OTHER_USER, USER, Conversation, delivered, settled, text_buttons

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

LINK = "https://v.douyin.com/retry/"


async def test_retry_starts_a_new_run_and_sends_the_text_again(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send(LINK)
    _, first = await chat.wait_for_messages(2)
    await delivered()

    query = chat.press(first)
    answer = await chat.answer_to(query)
    assert answer["text"] == "Retrying task #1 (1 of 2)..."
    _, first_now, second = await chat.wait_for_messages(3)

    assert first_now.buttons() == []  # the pressed button went away
    assert second.buttons() == text_buttons()
    runs = coze.runs_for_task((await Task.get(id=1)).run_id)
    assert len(runs) == 1
    all_task_ids = {run.parameters["task_id"] for run in coze.runs.values()}
    assert len(all_task_ids) == 2  # each attempt has its own run id
    await delivered()
    task = await Task.get(id=1)
    assert task.retry_count == 1 and task.state == TaskState.COMPLETED
    # Retrying a task that had succeeded is still one extraction in the user's count.
    assert (await User.get(id=USER)).extract_count == 1


async def test_someone_elses_or_a_forged_button_changes_nothing(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    chat.send(LINK)
    _, result = await chat.wait_for_messages(2)
    await delivered()
    # Another user forges the data on a message of their own chat with the bot.
    intruder = Conversation(telegram, user_id=OTHER_USER)
    intruder.send("hi")
    (their_message,) = await intruder.wait_for_messages(1)

    answers = [
        await intruder.answer_to(intruder.press(their_message, "retry:1")),
        await chat.answer_to(chat.press(result, "retry:999")),
        await chat.answer_to(chat.press(result, "retry:abc")),
        await chat.answer_to(chat.press(result, "delete:1")),
    ]

    assert [a["text"] for a in answers] == [
        "This button is not for you, or the task no longer exists.",
        "This button is not for you, or the task no longer exists.",
        "This button is no longer valid.",
        "This button is no longer valid.",
    ]
    await settled()
    assert len(coze.runs) == 1
    task = await Task.get(id=1)
    assert task.retry_count == 0 and task.state == TaskState.COMPLETED
    assert chat.messages[1].buttons() == text_buttons()
    assert len(intruder.messages) == 1


async def test_retries_stop_at_the_limit_and_the_button_goes_away(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send(LINK)
    await chat.wait_for_messages(2)
    for attempt in (1, 2):
        await delivered()
        await chat.answer_to(chat.press(chat.messages[-1]))
        await chat.wait_for_messages(2 + attempt)
    await delivered()

    last = chat.messages[-1]
    # No retries left: the final text comes without Retry (the file button stays).
    assert last.buttons() == text_buttons()[1:]
    answer = await chat.answer_to(chat.press(chat.messages[1], "retry:1"))
    assert "no retries left" in answer["text"]
    await settled()
    assert len(coze.runs) == 3
    assert (await Task.get(id=1)).retry_count == 2


async def test_two_quick_presses_start_one_run(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text="slow text", duration=0.5)
    chat.send(LINK)
    _, result = await chat.wait_for_messages(2, timeout=5)
    await delivered()

    first = chat.press(result)
    second = chat.press(result)
    answers = [await chat.answer_to(first), await chat.answer_to(second)]

    assert answers[0]["text"].startswith("Retrying task #1")
    assert answers[1]["text"].startswith("Task #1 is already running")
    await chat.wait_for_messages(3)
    await settled(0.8)
    assert len(coze.runs) == 2
    assert len(chat.messages) == 3


async def test_racing_retries_in_the_database_grant_exactly_one(bot: RunningBot) -> None:
    # The handler serialises one chat's updates; the state machine must hold on its own too.
    await repository.upsert_user(USER, "Ann", None)
    task = await repository.create_task(
        user_id=USER, chat_id=USER, request_message_id=1, input_url=LINK, run_id="r0"
    )
    await Task.filter(id=task.id).update(state=TaskState.FAILED)

    decisions = await asyncio.gather(
        *(
            repository.begin_retry(
                task_id=task.id,
                user_id=USER,
                new_run_id=f"r{i}",
                max_retries=2,
                # A deadline ahead: one in the past let the running bot time the task out
                # before the assertions (a flaky failure under load).
                expires_at=task.created_at + dt.timedelta(hours=1),
            )
            for i in range(1, 6)
        )
    )

    granted = [d for d in decisions if d.refusal is None]
    assert len(granted) == 1
    stored = await Task.get(id=task.id)
    assert stored.retry_count == 1 and stored.state == TaskState.PENDING

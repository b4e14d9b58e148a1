"""Fault injection on the simulators: whatever Coze and Telegram do, every task ends delivered
or reported, none is left running past its deadline, and no text reaches the user twice.

Each test breaks one thing: a callback lost, doubled or late; a run-history call failing;
Telegram throttling (429), failing (500), timing out, refusing a payload (400) or refusing the
user (403). Process crashes are in test_crash.py.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bot.runtime import RunningBot, running_bot
from coze import callback_token
from simulators.coze import CozeFault, FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram, SentMessage, TelegramFault
from storage import Task, TaskState
from tests.conftest import (
    CALLBACK_SECRET,
    Conversation,
    delivered,
    eventually,
    failure_buttons,
    make_settings,
    settled,
    text_buttons,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

LINK = "https://v.douyin.com/fault/"
# About 9,400 characters: three messages (of at most 4096 UTF-16 units), not yet a document.
THREE_MESSAGES_OF_TEXT = "\n\n".join(
    f"Paragraph {n}: " + "words said in the video. " * 12 for n in range(30)
)


@pytest.fixture
def bot_with(database_url: str, telegram: FakeTelegram, coze: FakeCoze) -> Callable[..., Any]:
    """Run the bot with some settings changed: `async with bot_with(tasks={...}):`."""

    @asynccontextmanager
    async def run(**sections: dict[str, Any]) -> AsyncIterator[RunningBot]:
        async with running_bot(make_settings(database_url, telegram, coze, **sections)) as running:
            yield running

    return run


@pytest.fixture
def link_acknowledged(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> Callable[..., Any]:
    """Run the bot, paste LINK, and enter once it is acknowledged, with the workflow still
    running: what the test does to Telegram then meets the delivery of the text."""

    @asynccontextmanager
    async def run(**sections: dict[str, Any]) -> AsyncIterator[None]:
        coze.outcome_for = outcome(duration=0.3)
        async with bot_with(**sections):
            chat.send(LINK)
            await chat.wait_for_messages(1)
            yield

    return run


def outcome(**fields: Any) -> Callable[[str], WorkflowOutcome]:
    defaults: dict[str, Any] = {"text": "the words of the video", "duration": 0.05}
    defaults.update(fields)
    return lambda url: WorkflowOutcome(**defaults)


def texts_of(chat: Conversation) -> list[str]:
    return [message.text or "" for message in chat.messages]


def results(chat: Conversation) -> list[SentMessage]:
    return [m for m in chat.messages if (m.text or "").startswith("Task #1 - text of")]


async def task_one() -> Task:
    return await Task.get(id=1)


# --- Coze: callbacks lost, doubled, late; run history ------------------------------------------


async def test_a_lost_callback_is_settled_from_the_run_history(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(callback="lose")
    async with bot_with(tasks={"reconcile_after_seconds": 0.2}):
        chat.send(LINK)
        await delivered()
        task = await task_one()
    assert task.state == TaskState.COMPLETED and not task.callback_received
    (result,) = results(chat)
    assert result.text == f"Task #1 - text of {LINK}\n\nthe words of the video"
    assert results(chat)[0].buttons() == text_buttons()
    assert coze.history_calls >= 1


async def test_a_running_run_is_checked_again_later_with_growing_pauses(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(callback="lose", duration=1.6)
    # A generous rate limit, so that only the pauses between checks keep their number down.
    async with bot_with(
        tasks={"reconcile_after_seconds": 0.1}, coze={"history_checks_per_second": 100.0}
    ):
        chat.send(LINK)
        await delivered()
    # Checks at about 0.1, 0.3, 0.7, 1.5 and 3.1 s: a handful, not one per scan (every 0.1 s).
    assert 2 <= coze.history_calls <= 6
    assert len(results(chat)) == 1


async def test_a_task_whose_callback_arrived_is_never_polled(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(duration=0.05)
    async with bot_with(tasks={"reconcile_after_seconds": 0.1}):
        chat.send(LINK)
        await delivered()
        await settled(0.5)
    assert coze.history_calls == 0


async def test_a_run_history_failure_is_told_in_words_with_retry(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(
        callback="lose", status="Fail", error_code=720701013, error_message="Video unavailable"
    )
    async with bot_with(tasks={"reconcile_after_seconds": 0.2}):
        chat.send(LINK)
        await delivered()
        task = await task_one()
    _, failure = chat.messages
    assert failure.text is not None
    assert failure.text.startswith("Task #1 failed: The video was not found.")
    assert "Details: Video unavailable" in failure.text
    assert "720701013" not in failure.text
    assert failure.buttons() == failure_buttons()
    assert task.state == TaskState.FAILED


async def test_run_history_errors_are_checked_again_not_taken_as_an_outcome(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(callback="lose")
    coze.fail_next_history(4009, "busy", count=2)
    async with bot_with(tasks={"reconcile_after_seconds": 0.05, "max_check_interval_seconds": 0.1}):
        chat.send(LINK)
        await delivered()
    assert coze.history_calls == 3
    assert len(results(chat)) == 1


async def test_run_history_checks_respect_the_rate_limit(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    stamps: list[float] = []

    def record(execute_id: str) -> CozeFault | None:
        stamps.append(time.monotonic())
        return None

    coze.history_fault = record
    coze.outcome_for = outcome(callback="lose")
    async with bot_with(
        tasks={"reconcile_after_seconds": 0.05, "max_links_per_message": 3},
        coze={"history_checks_per_second": 4.0, "max_concurrent_history_checks": 2},
    ):
        for n in range(4):
            chat.send(
                f"https://v.douyin.com/a{n}/ https://v.douyin.com/b{n}/ https://v.douyin.com/c{n}/"
            )
        for task_id in range(1, 13):
            await delivered(task_id)
    assert len(stamps) >= 12
    # No window of one second holds more than the budget (plus the one the window starts on).
    for index, start in enumerate(stamps):
        assert sum(1 for s in stamps[index:] if s - start < 1.0) <= 5


async def test_duplicate_callbacks_deliver_one_text(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(duplicates=3)
    async with bot_with():
        chat.send(LINK)
        await delivered()
        await coze.drain()
        await settled()
    (run,) = coze.runs.values()
    assert run.callback_replies == [200, 200, 200, 200]
    assert len(results(chat)) == 1


async def test_past_the_deadline_the_user_is_told_and_a_late_text_still_arrives(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(duration=1.5, text="late but whole")
    async with bot_with(tasks={"timeout_seconds": 0.5, "reconcile_after_seconds": 60}):
        chat.send(LINK)
        await delivered()
        assert (await task_one()).state == TaskState.TIMEOUT
        _, notice = chat.messages
        assert notice.text is not None and "took too long" in notice.text
        assert notice.buttons() == failure_buttons()

        await coze.drain()
        await delivered()
        assert (await task_one()).state == TaskState.COMPLETED
    assert [m.text for m in results(chat)] == [f"Task #1 - text of {LINK}\n\nlate but whole"]
    assert len(chat.messages) == 3


async def test_at_the_deadline_the_run_history_is_asked_once_more_before_giving_up(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    # Checks at about 0.3 s and 0.9 s find the run going; it finishes at 1.2 s, callback lost;
    # the next check would be at 2.1 s, past the 1.5 s deadline.
    coze.outcome_for = outcome(callback="lose", duration=1.2, text="found at the deadline")
    async with bot_with(tasks={"timeout_seconds": 1.5, "reconcile_after_seconds": 0.3}):
        chat.send(LINK)
        await delivered()
        task = await task_one()
    assert task.state == TaskState.COMPLETED
    assert [m.text for m in results(chat)] == [f"Task #1 - text of {LINK}\n\nfound at the deadline"]
    assert not any("took too long" in text for text in texts_of(chat))


async def test_no_task_outlives_its_deadline_even_when_nothing_answers(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = outcome(callback="lose", duration=3600)
    coze.history_fault = lambda execute_id: CozeFault(5000, "internal error")
    async with bot_with(tasks={"timeout_seconds": 0.6, "reconcile_after_seconds": 0.1}):
        chat.send(LINK)
        await delivered()
        task = await task_one()
    assert task.state == TaskState.TIMEOUT
    assert "took too long" in texts_of(chat)[1]


# --- Telegram: 429, 500, timeouts, 400, 403 ----------------------------------------------------


async def test_telegram_asking_to_wait_is_honoured_and_the_text_sent_once(
    link_acknowledged: Callable[..., Any], chat: Conversation, telegram: FakeTelegram
) -> None:
    async with link_acknowledged():
        telegram.fail_next(
            "sendMessage", status=429, description="Too Many Requests", retry_after=1
        )
        started = time.monotonic()
        await delivered()
        waited = time.monotonic() - started
    assert waited >= 1.0
    assert len(results(chat)) == 1


async def test_a_server_error_is_retried_with_backoff_and_sent_once(
    link_acknowledged: Callable[..., Any], chat: Conversation, telegram: FakeTelegram
) -> None:
    async with link_acknowledged():
        telegram.fail_next("sendMessage", status=500, description="Internal Server Error", count=2)
        await delivered()
        task = await task_one()
    assert len(results(chat)) == 1
    assert task.delivery_attempts == 3


async def test_a_send_that_times_out_is_recorded_as_possibly_delivered_not_resent(
    link_acknowledged: Callable[..., Any], chat: Conversation, telegram: FakeTelegram
) -> None:
    async with link_acknowledged(telegram={"request_timeout_seconds": 0.5}):
        telegram.delay_next("sendMessage", 1.5)  # Telegram has it; the bot hears nothing in time
        await delivered()
        await settled(1.5)
        task = await task_one()
    assert task.send_timed_out and task.notification_sent
    assert len(results(chat)) == 1


async def test_a_user_who_blocked_the_bot_is_tried_once_then_given_up(
    link_acknowledged: Callable[..., Any], chat: Conversation, telegram: FakeTelegram
) -> None:
    async with link_acknowledged():
        sends_before = len(telegram.calls_of("sendMessage"))
        telegram.block(chat.user_id)

        async def given_up() -> bool:
            return (await task_one()).undeliverable

        await eventually(given_up, what="delivery given up")
        await settled(0.5)
        task = await task_one()
    assert len(telegram.calls_of("sendMessage")) == sends_before + 1
    assert not task.notification_sent and task.delivery_attempts == 1


async def test_a_refused_payload_is_changed_not_resent_as_it_was(
    link_acknowledged: Callable[..., Any], chat: Conversation, telegram: FakeTelegram
) -> None:
    async with link_acknowledged():
        telegram.fail_next("sendMessage", status=400, description="Bad Request: too long")
        await delivered()
    refused, *_ = telegram.calls_of("sendMessage")[1:]
    (document,) = [m for m in chat.messages if m.document is not None]
    assert document.document == b"the words of the video"
    assert document.reply_to_message_id is None  # the reply was part of what changed
    assert document.buttons() == text_buttons()
    assert "reply_parameters" in refused


async def test_a_long_text_interrupted_half_way_resumes_without_repeating_a_piece(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.outcome_for = outcome(duration=0.05, text=THREE_MESSAGES_OF_TEXT)
    pieces_tried: list[str] = []

    def fail_second_piece_once(method: str, params: dict[str, Any]) -> TelegramFault | None:
        if method != "sendmessage" or "Paragraph" not in str(params.get("text", "")):
            return None
        pieces_tried.append(str(params["text"]))
        if len(pieces_tried) == 2:
            return TelegramFault(502, "Bad Gateway")
        return None

    telegram.fault_hook = fail_second_piece_once
    async with bot_with():
        chat.send(LINK)
        await delivered()
    pieces = chat.messages[1:]
    assert len(pieces_tried) == 4  # three pieces, the second twice
    assert len(pieces) == 3
    assert len({piece.text for piece in pieces}) == 3  # no piece twice
    assert pieces[0].reply_to_message_id is not None
    assert pieces[-1].buttons() == text_buttons()


async def test_messages_to_one_chat_are_paced(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.outcome_for = outcome(duration=0.05, text=THREE_MESSAGES_OF_TEXT)
    stamps: list[float] = []

    def record(method: str, params: dict[str, Any]) -> None:
        if (method == "sendmessage" and "text of" in str(params.get("text", ""))) or stamps:
            stamps.append(time.monotonic())

    telegram.fault_hook = record
    async with bot_with(delivery={"per_chat_interval_seconds": 0.4, "per_chat_burst": 1}):
        chat.send(LINK)
        await delivered()
    assert len(stamps) == 3
    assert all(later - earlier >= 0.35 for earlier, later in itertools.pairwise(stamps))


# --- progress ------------------------------------------------------------------------------------


async def test_progress_is_shown_in_the_acknowledgement(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.send_progress = True
    coze.outcome_for = outcome(duration=1.0)
    async with bot_with():
        chat.send(LINK)
        await chat.wait_until(lambda: bool(chat.messages) and chat.messages[0].edits > 0)
        ack = chat.messages[0]
        assert ack.text is not None and "50% done" in ack.text
        assert re.search(r"#1: 50% done, \d+ s so far", ack.text), ack.text  # and how long
        await delivered()
    assert len(telegram.calls_of("editMessageText")) == 1


async def test_progress_edits_are_throttled_and_never_repeat_what_is_shown(
    bot_with: Callable[..., Any], chat: Conversation, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.callbacks_enabled = False  # this test plays the workflow's HTTP node itself
    edits: list[float] = []

    def record(method: str, params: dict[str, Any]) -> None:
        if method == "editmessagetext":
            edits.append(time.monotonic())

    telegram.fault_hook = record
    async with (
        bot_with(delivery={"progress_edit_interval_seconds": 0.6}) as running,
        aiohttp.ClientSession() as http,
    ):
        chat.send(LINK)
        await chat.wait_for_messages(1)
        await coze.wait_for(lambda: len(coze.runs) == 1)
        task = await task_one()

        async def report(progress: int) -> None:
            body = {
                "task_id": task.run_id,
                "token": callback_token(CALLBACK_SECRET, task.run_id),
                "status": "processing",
                "progress": progress,
            }
            async with http.post(f"{running.public_url}/webhook/coze", json=body) as response:
                assert response.status == 200

        await report(10)
        await chat.wait_until(lambda: "10% done" in (chat.messages[0].text or ""))
        await report(20)  # within the interval: not shown at once ...
        await report(30)  # ... and superseded before it could be
        await chat.wait_until(lambda: "30% done" in (chat.messages[0].text or ""))
        await report(30)  # the same again: nothing new to show
        await settled(1.5)  # more than two intervals
    assert len(edits) == 2  # 10%, then 30% once the interval had passed
    assert all(later - earlier >= 0.55 for earlier, later in itertools.pairwise(edits))
    assert chat.messages[0].text is not None and "#1: 30% done" in chat.messages[0].text

"""POST /webhook/coze: the callback contract, over a real socket, on a fresh bot per test.

Answers: 200 accepted (also duplicates and stale attempts), 400 malformed, 401 bad token,
404 unknown run, 413 too large. A refused callback changes nothing. Every other way a request
can be wrong (malformed bodies, encodings, headers, connections) is in test_webhook_hardening.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bot.runtime import RunningBot
from coze import callback_token
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram
from storage import Task, TaskState
from tests.conftest import CALLBACK_SECRET, Conversation, eventually, failure_buttons, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def waiting_task(bot: RunningBot, chat: Conversation, coze: FakeCoze) -> Task:
    """A task whose run started but whose workflow never calls back by itself."""
    coze.callbacks_enabled = False
    chat.send("https://v.douyin.com/waiting/")
    await chat.wait_for_messages(1)

    async def started() -> bool:
        return (await Task.get(id=1)).state == TaskState.PROCESSING

    await eventually(started, what="the run started")
    return await Task.get(id=1)


def body_for(run_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": run_id,
        "token": callback_token(CALLBACK_SECRET, run_id),
        "status": "success",
        "text": "the words of the video",
        "error": "",
        "progress": 100,
    }
    body.update(fields)
    return body


async def post(http: aiohttp.ClientSession, bot: RunningBot, body: object) -> int:
    data = json.dumps(body).encode()
    async with http.post(
        bot.public_url + "/webhook/coze",
        data=data,
        headers={"Content-Type": "application/json"},
    ) as response:
        await response.read()
        return response.status


async def test_a_valid_callback_is_stored_and_the_text_delivered_once(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    body = body_for(waiting_task.run_id)

    statuses = [await post(http, bot, body) for _ in range(3)]

    assert statuses == [200, 200, 200]
    _, result = await chat.wait_for_messages(2)
    assert result.text is not None and "the words of the video" in result.text
    await settled()
    assert len(chat.messages) == 2
    task = await Task.get(id=waiting_task.id)
    assert task.state == TaskState.COMPLETED and task.callback_received


async def test_duplicate_callbacks_from_the_workflow_deliver_once(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    coze.callback_duplicates = 2
    chat.send("https://v.douyin.com/dup/")
    await chat.wait_for_messages(2)
    await coze.drain()
    (run,) = coze.runs.values()
    assert run.callback_replies == [200, 200, 200]
    await settled()
    assert len(chat.messages) == 2


async def test_a_bad_token_is_401_and_changes_nothing(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    forged = body_for(waiting_task.run_id, token="0" * 64)
    other_runs_token = body_for(
        waiting_task.run_id, token=callback_token(CALLBACK_SECRET, "another-run")
    )
    wrong_secret = body_for(
        waiting_task.run_id, token=callback_token("not-the-secret-at-all", waiting_task.run_id)
    )
    for body in (forged, other_runs_token, wrong_secret):
        assert await post(http, bot, body) == 401
    await _unchanged(waiting_task, chat)


async def test_an_unknown_run_is_404(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    assert await post(http, bot, body_for("never-issued-run-id")) == 404
    await _unchanged(waiting_task, chat)


async def test_a_body_over_the_limit_is_413_and_changes_nothing(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    huge = body_for(waiting_task.run_id, text="字" * 400_000)  # 1.2 MB of UTF-8
    assert await post(http, bot, huge) == 413
    await _unchanged(waiting_task, chat)


async def test_a_callback_for_an_old_attempt_is_accepted_and_ignored(
    bot: RunningBot,
    chat: Conversation,
    coze: FakeCoze,
    http: aiohttp.ClientSession,
    waiting_task: Task,
) -> None:
    old_run = waiting_task.run_id
    assert await post(http, bot, body_for(old_run, status="failed", error="boom")) == 200
    _, failure = await chat.wait_for_messages(2)

    async def delivered() -> bool:
        return (await Task.get(id=waiting_task.id)).notification_sent

    await eventually(delivered, what="the failure delivered")
    await chat.answer_to(chat.press(failure))

    async def retried() -> bool:
        task = await Task.get(id=waiting_task.id)
        return task.run_id != old_run and task.state == TaskState.PROCESSING

    await eventually(retried, what="the retry started")
    assert await post(http, bot, body_for(old_run, text="stale words")) == 200
    await settled()
    assert len(chat.messages) == 2
    task = await Task.get(id=waiting_task.id)
    assert task.state == TaskState.PROCESSING and task.result_text is None


async def test_progress_is_recorded_without_settling(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    body = body_for(waiting_task.run_id, status="processing", progress=40, text="")
    assert await post(http, bot, body) == 200
    task = await Task.get(id=waiting_task.id)
    assert task.progress == 40 and task.state == TaskState.PROCESSING
    await settled()
    assert len(chat.messages) == 1


async def test_a_late_callback_after_the_deadline_is_still_delivered(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    await Task.filter(id=waiting_task.id).update(state=TaskState.TIMEOUT, notification_sent=True)
    assert await post(http, bot, body_for(waiting_task.run_id, text="late words")) == 200
    _, result = await chat.wait_for_messages(2)
    assert result.text is not None and "late words" in result.text


async def test_a_failed_run_is_told_in_plain_words_with_retry(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    body = body_for(waiting_task.run_id, status="failed", text="", error="video unavailable")
    assert await post(http, bot, body) == 200
    _, failure = await chat.wait_for_messages(2)
    assert failure.text is not None
    assert failure.text.startswith("Task #1 failed: The video was not found.")
    assert "Details: video unavailable" in failure.text
    assert failure.buttons() == failure_buttons()


async def test_a_technical_failure_reason_is_not_shown_to_the_user(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    error = 'Traceback (most recent call last):\n  File "node.py", line 3\nKeyError: token=abc'
    body = body_for(waiting_task.run_id, status="failed", error=error)
    assert await post(http, bot, body) == 200
    _, failure = await chat.wait_for_messages(2)
    assert failure.text is not None
    assert "Traceback" not in failure.text and "token" not in failure.text
    assert "Details" not in failure.text


async def test_success_without_text_is_reported_as_no_text(
    bot: RunningBot, chat: Conversation, http: aiohttp.ClientSession, waiting_task: Task
) -> None:
    assert await post(http, bot, body_for(waiting_task.run_id, text="  \n ")) == 200
    _, failure = await chat.wait_for_messages(2)
    assert failure.text is not None and "No speech or text was found" in failure.text


async def test_a_running_bot_is_alive_and_ready_until_it_stops(
    bot: RunningBot, http: aiohttp.ClientSession
) -> None:
    async with http.get(bot.public_url + "/healthz") as response:
        assert response.status == 200
    async with http.get(bot.public_url + "/readyz") as response:
        assert response.status == 200
        assert await response.json() == {
            "ok": True,
            "database": "ok",
            "telegram": "ok",
            "stopping": False,
        }
    bot.stopping()  # as on SIGTERM: traffic should go elsewhere from now on
    async with http.get(bot.public_url + "/readyz") as response:
        assert response.status == 503
        assert (await response.json())["stopping"] is True
    async with http.get(bot.public_url + "/healthz") as response:
        assert response.status == 200  # still alive while it finishes


async def _unchanged(task: Task, chat: Conversation) -> None:
    await settled(0.2)
    now = await Task.get(id=task.id)
    assert (now.state, now.progress, now.callback_received) == (TaskState.PROCESSING, 0, False)
    assert not now.result_text
    assert len(chat.messages) == 1


async def test_callbacks_that_arrive_together_are_stored_together_and_each_answered(
    bot: RunningBot, coze: FakeCoze, http: aiohttp.ClientSession, telegram: FakeTelegram
) -> None:
    """Forty outcomes and forty duplicates at once: each first outcome is stored (and its text
    sent once), in fewer commits than outcomes, and every duplicate is answered 200."""
    coze.callbacks_enabled = False
    users = [7000 + n for n in range(40)]
    for user in users:
        telegram.user_sends(user, f"https://v.douyin.com/together-{user}/")

    async def all_started() -> bool:
        return await Task.filter(state=TaskState.PROCESSING).count() == len(users)

    await eventually(all_started, what="every run started")
    run_ids = [task.run_id for task in await Task.all()]
    writer = bot.service.outcomes
    before = writer.batches
    statuses = await asyncio.gather(
        *(post(http, bot, body_for(run_id)) for run_id in run_ids + run_ids)
    )
    assert statuses == [200] * (2 * len(users))
    assert await Task.filter(state=TaskState.COMPLETED).count() == len(users)
    assert writer.batches - before < len(users)

    async def all_delivered() -> bool:
        return await Task.filter(notification_sent=True).count() == len(users)

    await eventually(all_delivered, timeout=30, what="every text delivered")
    await settled()
    for user in users:
        texts = [m for m in telegram.messages(user) if (m.text or "").startswith("Task #")]
        assert len(texts) == 1

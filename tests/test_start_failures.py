"""A run that cannot be started: the user is told in words, with Retry, and nothing hangs."""

from __future__ import annotations

import logging

import pytest

from bot.runtime import RunningBot
from simulators.coze import FakeCoze
from storage import Task, TaskState
from tests.conftest import Conversation, delivered

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("code", "http_status", "kind", "words"),
    [
        (6003, 200, "coze_plan", "plan does not allow this"),
        (4100, 401, "coze_config", "not set up correctly"),
        (4200, 200, "coze_config", "not set up correctly"),
        (4011, 200, "coze_quota", "used up its quota"),
        (4009, 200, "coze_busy", "busy right now"),
        (0, 502, "coze_busy", "busy right now"),
    ],
    ids=[
        "6003-free-plan",
        "4100-bad-token",
        "4200-unpublished",
        "4011-balance",
        "4009-busy",
        "502",
    ],
)
async def test_a_refused_start_is_reported_with_retry(
    bot: RunningBot,
    chat: Conversation,
    coze: FakeCoze,
    code: int,
    http_status: int,
    kind: str,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    coze.fail_next_start(code, "refused by the test", http_status=http_status)
    caplog.set_level(logging.WARNING, logger="tasks")

    chat.send("https://v.douyin.com/refused/")
    await delivered()

    _, failure = chat.messages
    assert failure.text is not None
    assert failure.text.startswith("Task #1 failed:") and words in failure.text
    assert "refused by the test" not in failure.text  # Coze's words are for the operator
    assert failure.buttons() == [("Retry", "retry:1")]
    task = await Task.get(id=1)
    assert task.state == TaskState.FAILED and task.error_kind == kind
    # The operator's log says what Coze said.
    assert any("refused by the test" in record.getMessage() for record in caplog.records)


async def test_a_network_fault_at_start_is_reported_and_retry_then_works(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    coze.drop_next_start_connection()
    chat.send("https://v.douyin.com/netfault/")
    await delivered()
    _, failure = chat.messages
    assert failure.text is not None and "busy right now" in failure.text

    await chat.answer_to(chat.press(failure))
    await chat.wait_for_messages(3)
    assert chat.messages[2].text is not None and "Task #1 - text of" in chat.messages[2].text

"""A run that cannot be started: passing trouble is tried again, lasting trouble is told at once
in words, with Retry; the operator's log says what to fix; nothing hangs."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from bot.config import Settings
from bot.runtime import running_bot
from simulators.coze import RISK_CONTROL, TOKEN_INVALID, CozeFault, FakeCoze
from storage import Task, TaskState
from tests.conftest import Conversation, delivered, failure_buttons, make_settings, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


@pytest.mark.parametrize(
    ("code", "http_status", "kind", "words", "hint"),
    [
        (6003, 200, "coze_plan", "plan does not allow this", "paid Coze plan"),
        (4100, 401, "coze_config", "not set up correctly", "coze.token"),
        (4101, 200, "coze_config", "not set up correctly", "permission"),
        (4200, 200, "coze_config", "not set up correctly", "coze.workflow_id"),
        (4011, 200, "coze_quota", "used up its quota of the text service", "top it up"),
        (700012006, 401, "coze_config", "not set up correctly", "coze.api_base_url"),
        (4019, 200, "coze_quota", "used up its quota of the text service", "top up the balance"),
        (4022, 200, "coze_quota", "used up its quota of the text service", "top up the balance"),
    ],
    ids=[
        "6003-free-plan",
        "4100-bad-token",
        "4101-no-permission",
        "4200-unpublished",
        "4011",
        "700012006-invalid-token",
        "4019-arrears",
        "4022-model-arrears",
    ],
)
async def test_a_lasting_refusal_fails_at_once_and_tells_user_and_operator(
    bot: object,
    chat: Conversation,
    coze: FakeCoze,
    code: int,
    http_status: int,
    kind: str,
    words: str,
    hint: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    coze.fail_next_start(code, "refused by the test", http_status=http_status, count=5)
    caplog.set_level(logging.WARNING, logger="tasks")

    chat.send("https://v.douyin.com/refused/")
    await delivered()

    _, failure = chat.messages
    assert failure.text is not None
    assert failure.text.startswith("Task #1 failed:") and words in failure.text
    assert "refused by the test" not in failure.text  # Coze's words are for the operator
    assert failure.buttons() == failure_buttons()
    task = await Task.get(id=1)
    assert task.state == TaskState.FAILED and task.error_kind == kind
    assert coze.start_calls == 1  # not tried again: it cannot work until someone fixes it
    # The operator's log says what Coze said and what to change.
    (error,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "refused by the test" in error.getMessage() and hint in error.getMessage()


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        (4009, 200),
        (4013, 200),
        (4020, 200),
        (4102, 200),
        (5000, 200),
        (0, 429),
        (0, 502),
        (0, 503),
    ],
    ids=[
        "4009-busy",
        "4013-model",
        "4020-rpm",
        "4102-risk-control",
        "5000-internal",
        "http-429",
        "502",
        "503",
    ],
)
async def test_passing_trouble_at_start_is_tried_again_and_the_text_arrives(
    bot: object, chat: Conversation, coze: FakeCoze, code: int, http_status: int
) -> None:
    coze.fail_next_start(code, "busy, says the test", http_status=http_status, count=2)

    chat.send("https://v.douyin.com/busy/")
    await delivered()

    _, result = chat.messages
    assert result.text is not None and result.text.startswith("Task #1 - text of")
    assert coze.start_calls == 3
    assert len(coze.runs) == 1


async def test_risk_control_at_start_is_tried_again_with_growing_pauses(
    database_url: str, chat: Conversation, coze: FakeCoze, caplog: pytest.LogCaptureFixture
) -> None:
    coze.fail_next_start_with(RISK_CONTROL, count=2)
    calls: list[float] = []

    def note_the_try(parameters: dict[str, Any]) -> CozeFault | None:
        calls.append(time.monotonic())  # only tries past the queued faults get here
        return None

    coze.start_fault = note_the_try
    spaced = make_settings(
        database_url, chat.telegram, coze, coze={"start_attempts": 4, "start_backoff_seconds": 0.2}
    )
    caplog.set_level(logging.WARNING, logger="tasks")
    started = time.monotonic()
    async with running_bot(spaced):
        chat.send("https://v.douyin.com/risky/")
        await delivered()
    _, result = chat.messages
    assert result.text is not None and result.text.startswith("Task #1 - text of")
    assert coze.start_calls == 3 and len(coze.runs) == 1
    # Two pauses before the third try: 0.2 s, then 0.4 s.
    assert calls and calls[0] - started >= 0.6
    tries = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(tries) == 2 and all("4102" in message for message in tries)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_invalid_token_fails_at_once_and_the_log_says_what_to_do_but_not_the_token(
    bot: object, chat: Conversation, coze: FakeCoze, caplog: pytest.LogCaptureFixture
) -> None:
    coze.fail_next_start_with(TOKEN_INVALID, count=5)  # HTTP 401 {"code":700012006,...}
    caplog.set_level(logging.INFO)

    chat.send("https://v.douyin.com/abc123/")
    await delivered()

    _, failure = chat.messages
    assert failure.text is not None and "not set up correctly" in failure.text
    assert "700012006" not in failure.text and "token" not in failure.text
    assert failure.buttons() == failure_buttons()
    task = await Task.get(id=1)
    assert (task.state, task.error_kind) == (TaskState.FAILED, "coze_config")
    assert coze.start_calls == 1
    (error,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    message = error.getMessage()
    assert "700012006" in message and "logid" in message
    for words in ("new personal access token", "COZE_API_TOKEN", "coze.api_base_url"):
        assert words in message
    assert coze.token not in caplog.text  # messages and tracebacks alike


async def test_a_dropped_connection_at_start_is_tried_again(
    bot: object, chat: Conversation, coze: FakeCoze
) -> None:
    coze.drop_next_start_connection()
    chat.send("https://v.douyin.com/netfault/")
    await delivered()
    _, result = chat.messages
    assert result.text is not None and result.text.startswith("Task #1 - text of")


async def test_trouble_that_outlasts_the_tries_is_reported_and_retry_then_works(
    settings: Settings, chat: Conversation, coze: FakeCoze
) -> None:
    assert settings.coze.start_attempts == 4
    coze.fail_next_start(4009, "busy, says the test", count=4)
    async with running_bot(settings):
        chat.send("https://v.douyin.com/busy/")
        await delivered()
        _, failure = chat.messages
        assert failure.text is not None and "busy right now" in failure.text
        assert coze.start_calls == 4

        await chat.answer_to(chat.press(failure))
        await chat.wait_for_messages(3)
    assert chat.messages[2].text is not None and "Task #1 - text of" in chat.messages[2].text


async def test_a_task_whose_start_outlasts_its_deadline_times_out(
    database_url: str, chat: Conversation, coze: FakeCoze
) -> None:
    coze.fail_next_start(4009, "busy, says the test", count=100)
    slow = make_settings(
        database_url,
        chat.telegram,
        coze,
        coze={"start_attempts": 10, "start_backoff_seconds": 0.2},
        tasks={"timeout_seconds": 0.5},
    )
    async with running_bot(slow):
        chat.send("https://v.douyin.com/busy/")
        await delivered()
        await settled(1.0)  # long enough for several more tries, had they gone on
        assert (await Task.get(id=1)).state == TaskState.TIMEOUT
    _, notice = chat.messages
    assert notice.text is not None and "took too long" in notice.text
    assert notice.buttons() == failure_buttons()
    assert coze.start_calls <= 3  # it stopped trying once the task was given up

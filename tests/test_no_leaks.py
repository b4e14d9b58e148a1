"""Nothing leaks: no log line at INFO or above holds a token, a secret, a callback body or a
user's message text; users never see Coze's internals, links or bidirectional controls in a
workflow's failure reason."""

from __future__ import annotations

import logging

import pytest

from bot.config import Settings
from bot.runtime import RunningBot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from tests.conftest import CALLBACK_SECRET, Conversation, delivered

pytestmark = pytest.mark.asyncio

DIARY = "my private diary words"
TRANSCRIPT = "SECRET-TRANSCRIPT-WORDS"


async def test_logs_at_info_hold_no_message_text_token_or_callback_body(
    settings: Settings,
    bot: RunningBot,
    chat: Conversation,
    coze: FakeCoze,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    coze.outcome_for = lambda url: WorkflowOutcome(text=TRANSCRIPT)
    chat.send(f"{DIARY} https://v.douyin.com/leak/")
    await chat.wait_for_messages(2)
    chat.send("/status ²")  # once an error with the user's text in its message
    await chat.wait_for_messages(3)
    await delivered(1)
    (run,) = coze.runs.values()
    forbidden = [
        DIARY,
        TRANSCRIPT,
        "²",
        run.parameters["callback_token"],
        CALLBACK_SECRET,
        telegram.token,
        coze.token,
    ]
    # Every line, httpx's per-request lines (Coze's client) included: Telegram's calls go
    # through aiohttp's client, which logs no URLs (they would hold the bot token).
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    loud = [r.getMessage() for r in records]
    for line in loud:
        for secret in forbidden:
            assert secret not in line, (secret, line)
    assert not [r for r in records if r.exc_info]
    assert chat.messages[2].text is not None and "/status" in chat.messages[2].text


@pytest.mark.parametrize(
    "reason",
    [
        "see https://evil.example/phish for details",
        "contact @scammer_bot now",
        "video unavailable \u202egnp.exe",
        "visit evil.example.com today",
    ],
)
async def test_a_failure_reason_with_a_link_handle_or_bidi_control_is_not_shown(
    bot: RunningBot, chat: Conversation, coze: FakeCoze, reason: str
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(status="Fail", error_message=reason)
    chat.send("https://v.douyin.com/fails/")
    _, failure = await chat.wait_for_messages(2)
    assert failure.text is not None and "failed" in failure.text
    for piece in ("evil", "@scammer", "\u202e", "phish", "Details"):
        assert piece not in failure.text

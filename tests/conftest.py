"""Shared fixtures: the two simulators on OS-chosen ports, settings on a temporary SQLite
file, and the whole bot running in this event loop against them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.config import Settings
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze
from simulators.settings import bot_settings
from simulators.telegram import FakeTelegram, SentMessage
from storage import Task

CALLBACK_SECRET = "test-callback-secret-0123456789"
USER = 1001
OTHER_USER = 2002
SHARE_TEXT = (
    "7.43 复制打开抖音，看看【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/ Mwz:/ 09/27"
)


TEST_PAUSES: dict[str, dict[str, Any]] = {
    "coze": {"start_backoff_seconds": 0.05},
    "tasks": {"scan_interval_seconds": 0.1},
    "delivery": {
        "per_chat_interval_seconds": 0.0,
        "retry_backoff_seconds": 0.05,
        "progress_edit_interval_seconds": 0.0,
    },
}


def make_settings(
    tmp_path: Path, telegram: FakeTelegram, coze: FakeCoze, /, **sections: dict[str, Any]
) -> Settings:
    """Settings for a bot on these simulators; `sections` override keys (e.g. tasks={...})."""
    raw: dict[str, Any] = bot_settings(telegram, coze, tmp_path, callback_secret=CALLBACK_SECRET)
    # Pauses scaled down so that a test of a retry or a backoff takes a fraction of a second;
    # tests of pacing itself set their own.
    for section, values in TEST_PAUSES.items():
        raw.setdefault(section, {}).update(values)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return Settings.model_validate(raw)


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def coze() -> AsyncIterator[FakeCoze]:
    fake = FakeCoze(callback_timeout=2.0)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(tmp_path: Path, telegram: FakeTelegram, coze: FakeCoze) -> Settings:
    return make_settings(tmp_path, telegram, coze)


@pytest_asyncio.fixture
async def bot(settings: Settings) -> AsyncIterator[RunningBot]:
    async with running_bot(settings) as running:
        yield running


class Conversation:
    """One user's private chat with the bot, as the user sees it."""

    def __init__(self, telegram: FakeTelegram, user_id: int = USER) -> None:
        self.telegram = telegram
        self.user_id = user_id

    def send(self, text: str, **kwargs: Any) -> dict[str, Any]:
        return self.telegram.user_sends(self.user_id, text, **kwargs)

    @property
    def messages(self) -> list[SentMessage]:
        return self.telegram.messages(self.user_id)

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        await self.telegram.wait_for(lambda: len(self.messages) >= count, timeout)
        return self.messages

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.telegram.wait_for(predicate, timeout)

    def press(self, message: SentMessage, data: str | None = None) -> str:
        """Press a button of the message: by default the first (Retry or Refresh)."""
        if data is None:
            data = message.buttons()[0][1]
        return self.telegram.user_presses(self.user_id, message, data)

    async def answer_to(self, query_id: str, timeout: float = 10.0) -> dict[str, Any]:
        await self.telegram.wait_for(lambda: query_id in self.telegram.callback_answers, timeout)
        return self.telegram.callback_answers[query_id]


def text_buttons(number: int = 1, user: int = USER) -> list[tuple[str, str]]:
    """The buttons under a delivered text: Retry, and As a file."""
    return [("Retry", f"r:{user}:{number}"), ("As a file", f"f:{user}:{number}")]


def failure_buttons(number: int = 1, user: int = USER) -> list[tuple[str, str]]:
    """The button under a failure: Retry."""
    return [("Retry", f"r:{user}:{number}")]


@pytest.fixture
def chat(telegram: FakeTelegram) -> Conversation:
    return Conversation(telegram)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until an async check (e.g. a database query) holds; fail the test if it never does."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


async def settled(timeout: float = 0.3) -> None:
    """Give in-flight work a moment, so a test of "nothing more happens" can see it if it did."""
    await asyncio.sleep(timeout)


async def delivered(task_id: int = 1) -> None:
    """Wait until the outcome of task `task_id` has been sent and marked delivered."""

    async def check() -> bool:
        return await Task.filter(id=task_id, notification_sent=True).exists()

    await eventually(check, what=f"task {task_id} delivered")

"""Shared fixtures: the two simulators on OS-chosen ports, settings on a database of the test's
own, and the whole bot running in this event loop against them.

The database is a SQLite file in the test's temporary directory. In a module (or test) marked
`pytest.mark.postgres`, every test that uses one (through `settings`, `bot`, `database_url` or
`empty_database_url`) runs twice, `[sqlite]` and `[postgres]`, the second on a fresh PostgreSQL
database; marked `pytest.mark.postgres_only`, it runs on PostgreSQL alone. The [postgres] runs
need TEST_DATABASE_URL to name a server (tests/databases.py); without one they are deselected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from tortoise import connections
from tortoise.backends.base.executor import EXECUTOR_CACHE

from bot.config import Settings
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze
from simulators.settings import bot_settings
from simulators.telegram import FakeTelegram, SentMessage
from storage import Task, open_database
from tests import databases

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
    database: Path | str, telegram: FakeTelegram, coze: FakeCoze, /, **sections: dict[str, Any]
) -> Settings:
    """Settings for a bot on these simulators; `sections` override keys (e.g. tasks={...}).

    `database` is the `database_url` fixture's URL, or a directory for a SQLite file.
    """
    raw: dict[str, Any] = bot_settings(telegram, coze, Path(), callback_secret=CALLBACK_SECRET)
    raw["storage"]["database_url"] = (
        database if isinstance(database, str) else databases.sqlite_url(database)
    )
    # Pauses scaled down so that a test of a retry or a backoff takes a fraction of a second;
    # tests of pacing itself set their own.
    for section, values in TEST_PAUSES.items():
        raw.setdefault(section, {}).update(values)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return Settings.model_validate(raw)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses a database runs on each one its marker asks for: `postgres`, SQLite
    and PostgreSQL; `postgres_only`, PostgreSQL alone."""
    if "database_kind" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("postgres_only"):
        metafunc.parametrize("database_kind", [databases.POSTGRES], indirect=True)
    elif metafunc.definition.get_closest_marker("postgres"):
        metafunc.parametrize("database_kind", [databases.SQLITE, databases.POSTGRES], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server, the [postgres] runs are left out (deselected): the one line
    saying so is tests/test_databases.py's skip."""
    if databases.postgres_problem() is None:
        return
    left_out = [item for item in items if databases.POSTGRES in _database_kinds(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if databases.POSTGRES not in _database_kinds(item)]


def _database_kinds(item: pytest.Item) -> set[str]:
    callspec = getattr(item, "callspec", None)
    return (
        {callspec.params["database_kind"]}
        if callspec and "database_kind" in callspec.params
        else set()
    )


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on: SQLite unless its marker asks for PostgreSQL."""
    return str(getattr(request, "param", databases.SQLITE))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once per test process: each test's file is a copy."""
    return databases.create_sqlite_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database, made once per test process: each test's is a copy."""
    name = databases.create_postgres_template()
    try:
        yield name
    finally:
        databases.drop_template(name)


@pytest.fixture
def database_url(
    request: pytest.FixtureRequest, database_kind: str, tmp_path: Path
) -> Iterator[str]:
    """The test's own database, migrated and empty: the same one across restarts of the bot in
    the test."""
    if database_kind == databases.SQLITE:
        template = request.getfixturevalue("sqlite_template")
        made: contextlib.AbstractContextManager[str] = contextlib.nullcontext(
            databases.sqlite_database(template, tmp_path)
        )
    else:
        made = databases.postgres_database(request.getfixturevalue("postgres_template"))
    with made as url, fresh_orm():
        yield url


@pytest_asyncio.fixture
async def open_db(database_url: str) -> AsyncIterator[str]:
    """The test's database open in this event loop (migrated, empty), for tests of storage
    without a bot; yields its dialect ("sqlite" or "postgres")."""
    async with open_database(database_url):
        yield connections.get("default").capabilities.dialect


@pytest.fixture
def empty_database_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    """The test's own database with no tables at all (a first start migrates it)."""
    if database_kind == databases.SQLITE:
        made: contextlib.AbstractContextManager[str] = contextlib.nullcontext(
            databases.sqlite_url(tmp_path, "empty.sqlite3")
        )
    else:
        made = databases.postgres_database(None)
    with made as url, fresh_orm():
        yield url


@contextlib.contextmanager
def fresh_orm() -> Iterator[None]:
    # Tortoise caches each model's INSERT per connection name ("default"), not per dialect:
    # after a SQLite test, PostgreSQL would get "?" placeholders (and the other way round).
    EXECUTOR_CACHE.clear()
    try:
        yield
    finally:
        EXECUTOR_CACHE.clear()


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
def settings(database_url: str, telegram: FakeTelegram, coze: FakeCoze) -> Settings:
    return make_settings(database_url, telegram, coze)


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

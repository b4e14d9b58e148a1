"""One Telegram budget for the whole bot, against a Bot API that enforces its limit strictly:
under a backlog of texts, no call is refused with 429, and a new user's acknowledgement goes
out before the texts still waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import Task
from tests.conftest import eventually, make_settings

pytestmark = pytest.mark.asyncio

RATE = 20
USERS = 30  # 30 acknowledgements and 30 texts: three seconds of the budget


@pytest_asyncio.fixture
async def strict_bot(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze
) -> AsyncIterator[RunningBot]:
    telegram.max_requests_per_second = RATE
    settings = make_settings(
        database_url,
        telegram,
        coze,
        telegram={"max_requests_per_second": float(RATE)},
        delivery={"max_messages_per_second": float(RATE)},
    )
    async with running_bot(settings) as running:
        yield running


async def test_a_backlog_drains_with_no_429_and_answers_go_first(
    strict_bot: RunningBot, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text=f"The words of {url}", duration=0.05)
    users = [5000 + n for n in range(USERS)]
    for user in users:
        telegram.user_sends(user, f"https://v.douyin.com/budget-{user}/")
    # Once the texts are queued, one more user pastes a link.
    await telegram.wait_for(lambda: any(_is_text(m) for u in users for m in telegram.messages(u)))
    late = 9999
    telegram.user_sends(late, "https://v.douyin.com/budget-late/")

    async def all_delivered() -> bool:
        return await Task.filter(notification_sent=True).count() == USERS + 1

    await eventually(all_delivered, timeout=30, what="every text delivered")
    assert telegram.over_limit == 0
    sends = [params for name, params in telegram.calls if name == "sendMessage"]
    late_ack = next(
        i for i, p in enumerate(sends) if p["chat_id"] == str(late) or p["chat_id"] == late
    )
    last_early_text = max(
        i for i, p in enumerate(sends) if int(p["chat_id"]) in users and _is_text_call(p)
    )
    assert late_ack < last_early_text, "the acknowledgement waited behind the backlog"


def _is_text(message: object) -> bool:
    return (getattr(message, "text", None) or "").startswith("Task #")


def _is_text_call(params: dict[str, object]) -> bool:
    return str(params.get("text", "")).startswith("Task #")

"""GET /metrics: what the bot did, in Prometheus' text format."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.runtime import RunningBot
from tests.conftest import Conversation, delivered

pytestmark = pytest.mark.asyncio


async def scrape(bot: RunningBot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(bot.public_url + "/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_task_from_link_to_text_is_counted(bot: RunningBot, chat: Conversation) -> None:
    before = await scrape(bot)
    assert before[("link2text_tasks", (("state", "completed"),))] == 0
    chat.send("https://v.douyin.com/counted/")
    await chat.wait_for_messages(2)
    await delivered(1)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            bot.public_url + "/webhook/coze",
            data=b"not json",
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400

    after = await scrape(bot)
    assert after[("link2text_tasks", (("state", "completed"),))] == 1
    assert after[("link2text_outbox_backlog", ())] == 0
    assert after[("link2text_telegram_updates_total", (("source", "polling"),))] == 1
    assert after[("link2text_coze_calls_total", (("call", "start"), ("result", "ok")))] == 1
    assert after[("link2text_callbacks_total", (("status", "200"),))] >= 1
    assert after[("link2text_callbacks_total", (("status", "400"),))] == 1
    assert after[("link2text_deliveries_total", (("result", "delivered"),))] == 1
    assert after[("link2text_outcome_to_delivered_seconds_count", ())] == 1
    assert after[("link2text_start_to_outcome_seconds_count", ())] == 1
    assert after[("link2text_paste_to_ack_seconds_count", ())] == 1
    # Every claim on shared work was let go once the work was done.
    for kind in ("task", "chat", "update"):
        assert after[("link2text_claims", (("kind", kind),))] == 0

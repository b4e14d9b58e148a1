"""Telegram webhook mode: updates pushed to POST /webhook/telegram with the secret token are
stored before the 200 and handled like polled ones; anything else stores nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram
from storage import InboxUpdate, Task, repository
from storage.claims import Lease
from tests.conftest import Conversation, make_settings, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

SECRET = "a-webhook-secret_0123456789"
PATH = "/webhook/telegram"


@pytest_asyncio.fixture
async def webhook_bot(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze
) -> AsyncIterator[RunningBot]:
    settings = make_settings(
        database_url, telegram, coze, telegram={"mode": "webhook", "webhook_secret": SECRET}
    )
    async with running_bot(settings) as running:
        yield running


def update(update_id: int, text: str = "https://v.douyin.com/pushed/") -> dict[str, Any]:
    chat = {"id": 4242, "first_name": "Wu", "type": "private"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": 7,
            "from": {"id": 4242, "is_bot": False, "first_name": "Wu"},
            "chat": chat,
            "date": 1_700_000_000,
            "text": text,
            "entities": [{"type": "url", "offset": 0, "length": len(text)}],
        },
    }


async def push(bot: RunningBot, body: bytes | dict[str, Any], secret: str | None = SECRET) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.public_url + PATH, data=data, headers=headers) as response,
    ):
        return response.status


async def test_a_link_pushed_by_telegram_is_acknowledged_and_its_text_sent(
    webhook_bot: RunningBot, telegram: FakeTelegram, chat: Conversation
) -> None:
    (set_webhook,) = telegram.calls_of("setWebhook")
    assert set_webhook["url"] == webhook_bot.public_url + PATH
    assert set_webhook["secret_token"] == SECRET
    assert set_webhook["max_connections"] == 40
    assert sorted(set_webhook["allowed_updates"]) == ["callback_query", "message"]
    polls = len(telegram.calls_of("getUpdates"))

    chat.send("看看 https://v.douyin.com/by-webhook/")
    ack, text = await chat.wait_for_messages(2)
    assert ack.text is not None and ack.text.startswith("Got it! Task #1")
    assert text.text is not None and "by-webhook" in text.text
    assert len(telegram.webhook_deliveries) == 1
    assert len(telegram.calls_of("getUpdates")) == polls  # nobody polls in webhook mode
    assert await InboxUpdate.filter(handled=True).count() == 1


@pytest.mark.parametrize("secret", [None, "", "wrong-secret_0123456789", SECRET + "x", "秘密"])
async def test_a_wrong_or_missing_secret_stores_nothing(
    webhook_bot: RunningBot, secret: str | None
) -> None:
    assert await push(webhook_bot, update(501), secret=secret) == 401
    await settled()
    assert await InboxUpdate.all().count() == 0
    assert await Task.all().count() == 0


async def test_an_update_delivered_twice_makes_one_task(
    webhook_bot: RunningBot, telegram: FakeTelegram
) -> None:
    wu = Conversation(telegram, 4242)
    wu.send("/start")  # the chat exists (delivered by the fake's own webhook push)
    await wu.wait_for_messages(1)
    assert await push(webhook_bot, update(601)) == 200
    assert await push(webhook_bot, update(601)) == 200  # Telegram's retry after a lost 200
    await wu.wait_for_messages(3)
    await settled()
    assert await Task.all().count() == 1
    assert len(wu.messages) == 3  # /start's answer, one acknowledgement, one text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"message": {}}', 400),
        (b'{"update_id": "7"}', 400),
        (b"{" * 5000, 400),
        (b'{"update_id": 1, "pad": "' + b"x" * 1_100_000 + b'"}', 413),
    ],
)
async def test_a_malformed_or_oversized_body_is_refused_and_stores_nothing(
    webhook_bot: RunningBot, body: bytes, status: int
) -> None:
    assert await push(webhook_bot, body) == status
    assert await InboxUpdate.all().count() == 0


async def test_in_polling_mode_the_path_does_not_exist(bot: RunningBot) -> None:
    assert await push(bot, update(701)) == 404
    assert await InboxUpdate.filter(update_id=701).count() == 0


async def test_an_update_another_instance_stores_at_the_same_moment_is_left_to_it(
    webhook_bot: RunningBot, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telegram sends an update again while the first request is still under way, and the two
    reach different instances: the one that stores it second must neither handle it nor set it
    aside as poisoned."""
    wu = Conversation(telegram, 4242)
    wu.send("/start")
    await wu.wait_for_messages(1)
    # The other instance stored it just after this one looked.
    await repository.store_updates(
        [(602, json.dumps(update(602)))], Lease("other-instance:8080", 60.0)
    )
    looked = False

    async def not_yet(update_id: int) -> bool:
        nonlocal looked
        if update_id == 602 and not looked:
            looked = True
            return False
        return await InboxUpdate.exists(update_id=update_id)

    monkeypatch.setattr(repository, "update_is_stored", not_yet)
    assert await push(webhook_bot, update(602)) == 200
    await settled()
    assert looked
    stored = await InboxUpdate.get(update_id=602)
    assert (stored.poisoned, stored.handled, stored.claimed_by) == (
        False,
        False,
        "other-instance:8080",
    )
    assert await Task.all().count() == 0
    assert len(wu.messages) == 1

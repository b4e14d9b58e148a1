"""No update can stop the bot: what cannot be stored or read is set aside, and polling goes on."""

from __future__ import annotations

import json
import time

import pytest

from bot.config import Settings
from bot.runtime import running_bot
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram
from storage import InboxUpdate, open_database, repository
from storage.claims import Lease
from tests.conftest import OTHER_USER, USER, Conversation, eventually, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


def pinned_inaccessible(user_id: int) -> dict[str, object]:
    """A service message about a pin whose message the bot cannot see: the Bot API sends such
    a pinned_message as an InaccessibleMessage, with `date` 0 (PTB's Update.to_dict() then
    keeps a datetime that json.dumps refuses)."""
    chat = {"id": user_id, "first_name": "Ann", "type": "private"}
    return {
        "message": {
            "message_id": 900,
            "from": {"id": user_id, "is_bot": False, "first_name": "Ann"},
            "chat": chat,
            "date": int(time.time()),
            "pinned_message": {"chat": chat, "message_id": 17, "date": 0},
        }
    }


async def test_a_pin_of_an_inaccessible_message_does_not_stop_the_bot(
    settings: Settings, telegram: FakeTelegram, coze: FakeCoze, caplog: pytest.LogCaptureFixture
) -> None:
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    ann.send("/start")  # the chat exists
    telegram.queue_update(pinned_inaccessible(USER))
    async with running_bot(settings):
        bob.send("https://v.douyin.com/after-the-pin/")
        ack, text = await bob.wait_for_messages(2)
        assert ack.text is not None and "#1" in ack.text
        assert text.text is not None and "after-the-pin" in text.text
        assert len(coze.runs) == 1
        await eventually(_all_handled, what="every update handled")
        await settled()
        # The pin itself gets no answer (a service message): only /start was answered.
        assert len(ann.messages) == 1
    assert telegram.pending_updates() == 0

    # And after a restart: still polling, nothing replayed twice.
    async with running_bot(settings):
        bob.send("https://v.douyin.com/after-restart/")
        await bob.wait_for_messages(4)
        assert len(coze.runs) == 2
    assert "Traceback" not in caplog.text


async def test_an_update_that_cannot_be_read_is_set_aside_and_others_go_on(
    settings: Settings, telegram: FakeTelegram, coze: FakeCoze, caplog: pytest.LogCaptureFixture
) -> None:
    bob = Conversation(telegram, OTHER_USER)
    secret_words = "my private words 12345"
    # A message that is not an object: PTB cannot read it into an Update.
    poisoned_id = telegram.queue_update({"message": secret_words})
    async with running_bot(settings):
        bob.send("https://v.douyin.com/next/")
        await bob.wait_for_messages(2)
        await eventually(_all_handled, what="every update handled")
        stored = await InboxUpdate.get(update_id=poisoned_id)
        assert stored.poisoned and stored.handled
        assert secret_words not in stored.payload  # only its id and type are kept
    assert telegram.pending_updates() == 0
    lines = [r.getMessage() for r in caplog.records if str(poisoned_id) in r.getMessage()]
    assert len(lines) == 1, lines  # logged once
    assert "message" in lines[0] and secret_words not in caplog.text


async def test_a_poisoned_update_left_by_the_last_run_is_set_aside_at_start(
    settings: Settings, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    bob = Conversation(telegram, OTHER_USER)
    bob.send("/start")
    # Left by the last run, older than anything Telegram still holds.
    async with open_database(settings.storage.database_url):
        await repository.store_updates([(0, json.dumps({"update_id": 0, "message": 7}))])
    async with running_bot(settings):
        await bob.wait_for_messages(1)
        bob.send("https://v.douyin.com/replayed/")
        await bob.wait_for_messages(3)
        stored = await InboxUpdate.get(update_id=0)
        assert stored.poisoned and stored.handled
    assert len(coze.runs) == 1


async def test_an_update_the_database_refuses_is_set_aside_and_the_batch_goes_on(
    settings: Settings, telegram: FakeTelegram, coze: FakeCoze, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    real_store = repository.store_updates

    async def refuse_ann(updates: list[tuple[int, str]], lease: Lease | None = None) -> set[int]:
        if any(f'"id": {USER},' in payload for _, payload in updates):
            raise ValueError("the database refuses this row")
        return await real_store(updates, lease)

    monkeypatch.setattr(repository, "store_updates", refuse_ann)
    ann.send("https://v.douyin.com/refused/")
    bob.send("https://v.douyin.com/kept/")
    async with running_bot(settings):
        await bob.wait_for_messages(2)
        await eventually(_all_handled, what="every update handled")
        assert await InboxUpdate.filter(poisoned=True).count() == 1
    assert telegram.pending_updates() == 0
    assert [run.parameters["url"] for run in coze.runs.values()] == ["https://v.douyin.com/kept/"]
    assert ann.messages == []


async def _all_handled() -> bool:
    return not await InboxUpdate.filter(handled=False).exists()

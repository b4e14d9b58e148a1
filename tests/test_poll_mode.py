"""Poll mode (`coze.completion = "poll"`): no callback URL is sent, so the bot needs no public
address; each run's outcome is read from Coze's run history, first `poll_interval_seconds`
after the start, then each pause twice the last."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import Task
from tests.conftest import Conversation, delivered, make_settings, text_buttons

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

POLL = 0.1
POLL_MODE: dict[str, object] = {"completion": "poll", "poll_interval_seconds": POLL}


@pytest.fixture
def settings(database_url: str, telegram: FakeTelegram, coze: FakeCoze) -> Settings:
    """conftest's, in poll mode: its `bot` fixture runs on these."""
    return make_settings(database_url, telegram, coze, coze=POLL_MODE)


async def test_a_link_gets_its_text_read_from_run_history(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text="The words, read back.", duration=0.05)
    chat.send("https://v.douyin.com/polled/")
    ack, text = await chat.wait_for_messages(2)
    assert ack.text is not None and ack.text.startswith("Got it!")
    assert text.text is not None and "The words, read back." in text.text
    assert text.buttons() == text_buttons()
    await delivered(1)
    (run,) = coze.runs.values()
    # The workflow got no callback URL or token: nothing to reach, nothing to leak.
    assert set(run.parameters) == {"url", "task_id"}
    assert run.callbacks_sent == []
    assert coze.history_calls >= 1


async def test_a_long_run_is_polled_less_and_less_often(
    bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    """A run of 1.5 s polled every 0.1 s would cost 15 run-history calls; with the pause
    doubling (0.1, 0.2, 0.4, 0.8 s ...) it costs about five."""
    coze.outcome_for = lambda url: WorkflowOutcome(text="Slow words.", duration=1.5)
    chat.send("https://v.douyin.com/slow-polled/")
    await chat.wait_for_messages(2)
    await delivered(1)
    assert 2 <= coze.history_calls <= 6, coze.history_calls
    task = await Task.get(id=1)
    assert task.state == "completed" and not task.callback_received


async def test_the_first_look_comes_after_the_poll_interval_not_the_next_scan(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, chat: Conversation
) -> None:
    """The reconciler sleeps until its next pass (up to `tasks.scan_interval_seconds`, here a
    minute) when nothing is due; a run started meanwhile must not wait for that pass."""
    settings = make_settings(
        database_url, telegram, coze, coze=POLL_MODE, tasks={"scan_interval_seconds": 60.0}
    )
    coze.outcome_for = lambda url: WorkflowOutcome(text="Read in time.", duration=0.05)
    async with running_bot(settings):
        chat.send("https://v.douyin.com/first-look/")
        _ack, text = await chat.wait_for_messages(2, timeout=5.0)
        assert text.text is not None and "Read in time." in text.text

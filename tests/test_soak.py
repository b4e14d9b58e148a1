"""`make soak`, small: the real bot process under every fault at once, killed once mid-way."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.runtime import running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.soak import SoakOptions, format_tally, run_soak
from simulators.telegram import FakeTelegram
from storage import Task, TaskState
from tests.conftest import Conversation, eventually, make_settings, settled

pytestmark = pytest.mark.asyncio

SMALL = SoakOptions(
    tasks=60,
    users=6,
    kills=1,
    links_per_second=12.0,
    timeout_seconds=6.0,
    reconcile_after_seconds=1.0,
    settle_deadline_seconds=30.0,
    verbose=False,
)


@pytest.mark.timeout(60)
async def test_a_small_soak_loses_nothing_leaves_nothing_stuck_and_repeats_nothing() -> None:
    tally = await run_soak(SMALL)
    report = format_tally(tally, SMALL)

    assert tally.stuck == 0, report
    assert tally.lost == 0, report
    assert tally.duplicates_unexplained == 0, report
    assert tally.dropped_texts == 0, report
    assert tally.exit_code == 0 and not tally.unexpected_exits, report
    assert tally.kills == 1, report
    # Every link is accounted for, one way or another.
    assert tally.delivered + tally.reported + tally.undeliverable == tally.tasks, report
    assert tally.settled, report


# What the soak found, made small: a text that arrives while the timeout notice is on the wire.

LATE_LINK = "https://v.douyin.com/late-during-notice/"
LATE_TEXT = "The words of a video that took a little too long."


async def test_a_text_arriving_while_the_timeout_notice_is_sent_is_still_delivered(
    telegram: FakeTelegram, coze: FakeCoze, tmp_path: Path
) -> None:
    # The run outlasts the 1 s deadline and calls back at 1.5 s, while Telegram is still
    # answering the timeout notice (its reply held 1.5 s; the notice itself is delivered).
    coze.outcome_for = lambda url: WorkflowOutcome(text=LATE_TEXT, duration=1.5)
    settings = make_settings(
        tmp_path, telegram, coze, tasks={"timeout_seconds": 1.0, "reconcile_after_seconds": 30.0}
    )
    chat = Conversation(telegram)
    async with running_bot(settings):
        chat.send(LATE_LINK)
        await chat.wait_for_messages(1)  # the acknowledgement
        telegram.delay_next("sendMessage", 1.5)
        await coze.wait_for(lambda: any(200 in run.callback_replies for run in coze.runs.values()))
        await eventually(
            lambda: Task.filter(id=1, state=TaskState.COMPLETED, notification_sent=True).exists(),
            what="the late text marked delivered",
        )
        await settled(1.0)

    texts = [message.text or "" for message in chat.messages]
    assert any("took too long" in text for text in texts), texts
    assert sum(LATE_TEXT in text for text in texts) == 1, texts

"""Known videos are answered at once from an earlier extraction, with Refresh for a new one."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from tortoise.timezone import now

from bot.runtime import running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram
from storage import Task, TaskState
from tests.conftest import OTHER_USER, USER, Conversation, delivered, make_settings, settled

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

THIRD_USER = 3003
VIDEO = "https://www.bilibili.com/video/BV1xx411c7mD"


def words_of(url: str) -> WorkflowOutcome:
    return WorkflowOutcome(text=f"The words of the video, run at {url}")


def settings_for(database_url: str, telegram: FakeTelegram, coze: FakeCoze, **limits: Any) -> Any:
    return make_settings(database_url, telegram, coze, limits=limits)


async def test_the_same_video_shared_again_is_answered_at_once_and_refresh_runs_it_anew(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = words_of
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    # Bob may start one task a day: an answer from the database costs him none.
    async with running_bot(
        settings_for(database_url, telegram, coze, max_tasks_per_user_per_day=1)
    ):
        ann.send(f"看这个 {VIDEO}?spm_id_from=333.1007.tianma.1-1-1.click&vd_source=abc")
        await ann.wait_for_messages(2)
        await delivered(1)
        bob.send(f"【哔哩哔哩】 {VIDEO}/?share_source=copy_web&vd_source=xyz#reply12")
        (answer,) = await bob.wait_for_messages(1)
        assert answer.text is not None
        assert "This video was extracted" in answer.text and "ago" in answer.text
        assert f"The words of the video, run at {VIDEO}?spm_id_from" in answer.text
        assert answer.buttons() == [
            ("Refresh", f"rf:{OTHER_USER}:1"),
            ("As a file", f"f:{OTHER_USER}:1"),
        ]
        await settled()
        assert len(coze.runs) == 1  # no run for Bob's link
        assert len(bob.messages) == 1  # no acknowledgement: the text is the answer

        toast = await bob.answer_to(bob.press(answer))
        assert toast["text"] == "Extracting task #1 anew..."
        fresh = (await bob.wait_for_messages(2))[1]
        assert fresh.text is not None and "This video was extracted" not in fresh.text
        assert f"run at {VIDEO}/?share_source" in fresh.text
        assert fresh.buttons()[0] == ("Retry", f"r:{OTHER_USER}:1")
        assert len(coze.runs) == 2
        task = await Task.get(user_id=OTHER_USER, user_number=1)
        assert task.retry_count == 0 and task.reused_from is None  # no retry spent


async def test_a_failed_or_old_extraction_is_not_reused_and_zero_turns_reuse_off(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = lambda url: (
        WorkflowOutcome(status="Fail", error_message="video unavailable")
        if "fails" in url
        else words_of(url)
    )
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    carol = Conversation(telegram, THIRD_USER)
    async with running_bot(make_settings(database_url, telegram, coze, cache={"reuse_hours": 0})):
        ann.send(VIDEO)
        await ann.wait_for_messages(2)
        bob.send(VIDEO)
        await bob.wait_for_messages(2)
        assert len(coze.runs) == 2  # reuse is off
    async with running_bot(make_settings(database_url, telegram, coze)):
        ann.send("https://v.douyin.com/fails/")
        await ann.wait_for_messages(4)
        bob.send("https://v.douyin.com/fails/")
        await bob.wait_for_messages(4)
        assert len(coze.runs) == 4  # a failure is never served again
        # Texts made longer ago than reuse_hours (24) are not served either.
        day_ago = now() - dt.timedelta(hours=25)
        await Task.filter(state=TaskState.COMPLETED).update(text_made_at=day_ago)
        carol.send(VIDEO)
        await carol.wait_for_messages(2)
        assert len(coze.runs) == 5


async def test_a_text_whose_only_owner_deleted_it_is_not_served(
    bot: Any, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    coze.outcome_for = words_of
    ann, bob = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    ann.send(VIDEO)
    await ann.wait_for_messages(2)
    await delivered(1)
    ann.send("/delete 1")
    confirm = (await ann.wait_for_messages(3))[2]
    await ann.answer_to(ann.press(confirm))  # the first button: Delete
    await ann.wait_until(lambda: "deleted" in (ann.messages[2].text or ""))
    bob.send(VIDEO)
    ack = (await bob.wait_for_messages(2))[0]
    assert ack.text is not None and ack.text.startswith("Got it!")
    assert len(coze.runs) == 2

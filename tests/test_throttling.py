"""Telegram asking one chat to wait (429) holds up that chat only; 429s from several chats at
once (Telegram's overall flood limit) hold up every chat, for the longest time asked.

Handler replies (acknowledgements) and the delivery loop share one registry of pauses, so both
respect a pause whichever of them met the 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.pauses import Pauses
from bot.runtime import RunningBot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram, TelegramFault
from storage import Task
from tests.conftest import OTHER_USER, USER, Conversation, delivered, eventually, settled

ACK = "Got it!"


def too_many_requests(seconds: int) -> TelegramFault:
    return TelegramFault(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)


def text_of(params: dict[str, Any]) -> str:
    return str(params.get("text", ""))


def acks(chat: Conversation) -> list[str]:
    return [m.text or "" for m in chat.messages if (m.text or "").startswith(ACK)]


def results(chat: Conversation) -> list[str]:
    return [m.text or "" for m in chat.messages if " - text of " in (m.text or "")]


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for state the fake changes without telling its waiters (a fault_hook's own)."""

    async def check() -> bool:
        return predicate()

    await eventually(check, what=what)


async def task_of(user_id: int) -> Task:
    return await Task.get(user_id=user_id)


# --- one chat throttled ------------------------------------------------------------------------
#
# A's pause ends at least PAUSE seconds after the fake refused A's message (the bot hears the
# refusal after the fake sends it). The fault hook stamps each sendMessage as it arrives, so
# "B's messages came while A was paused" is: B's stamps before the refusal's + PAUSE.

PAUSE = 3


class Sends:
    """A fault hook: the first sendMessage to `chat_id` that `refuse` picks gets a 429."""

    def __init__(self, chat_id: int, refuse: Callable[[str], bool]) -> None:
        self.chat_id = chat_id
        self.refuse = refuse
        self.refused: list[tuple[str, float]] = []  # (text, when)
        self.stamps: list[tuple[int, str, float]] = []  # every sendMessage: (chat, text, when)

    def __call__(self, method: str, params: dict[str, Any]) -> TelegramFault | None:
        if method != "sendmessage":
            return None
        chat_id, text, when = params.get("chat_id"), text_of(params), time.monotonic()
        if chat_id == self.chat_id and not self.refused and self.refuse(text):
            self.refused.append((text, when))
            return too_many_requests(PAUSE)
        assert isinstance(chat_id, int)
        self.stamps.append((chat_id, text, when))
        return None

    @property
    def pause_end(self) -> float:
        """The earliest the refused chat's pause can end."""
        return self.refused[0][1] + PAUSE

    def sent_to(self, chat_id: int) -> list[tuple[str, float]]:
        return [(text, when) for chat, text, when in self.stamps if chat == chat_id]


@pytest.mark.asyncio
async def test_a_429_on_one_chats_reply_leaves_other_chats_alone(
    bot: RunningBot, telegram: FakeTelegram
) -> None:
    a, b = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    sends = telegram.fault_hook = Sends(USER, lambda text: text.startswith(ACK))
    a.send("https://v.douyin.com/chat-a/")
    await until(lambda: bool(sends.refused), "A's acknowledgement refused")

    b.send("https://v.douyin.com/chat-b/")
    await b.wait_for_messages(2)  # B: acknowledgement and text ...
    assert a.messages == []  # ... while A still waits
    assert all(when < sends.pause_end for _, when in sends.sent_to(OTHER_USER))

    await a.wait_for_messages(2)  # A: the acknowledgement after the pause, then the text
    assert len(acks(a)) == 1 and len(results(a)) == 1
    assert len(acks(b)) == 1 and len(results(b)) == 1
    (resent, when), _ = sends.sent_to(USER)
    assert resent == sends.refused[0][0] and when >= sends.pause_end


@pytest.mark.asyncio
async def test_a_429_on_one_chats_delivery_leaves_other_chats_alone(
    bot: RunningBot, telegram: FakeTelegram
) -> None:
    a, b = Conversation(telegram, USER), Conversation(telegram, OTHER_USER)
    sends = telegram.fault_hook = Sends(USER, lambda text: " - text of " in text)
    a.send("https://v.douyin.com/chat-a/")
    await until(lambda: bool(sends.refused), "A's text refused")

    b.send("https://v.douyin.com/chat-b/")
    await b.wait_for_messages(2)  # B: acknowledgement and text ...
    assert len(a.messages) == 1 and not results(a)  # ... while A's text waits
    assert all(when < sends.pause_end for _, when in sends.sent_to(OTHER_USER))

    await delivered((await task_of(USER)).id)
    assert results(a) == [sends.refused[0][0]]  # the same text, once
    _, (resent, when) = sends.sent_to(USER)
    assert resent == sends.refused[0][0] and when >= sends.pause_end
    assert [chat for chat, text, _ in sends.stamps if " - text of " in text] == [
        OTHER_USER,
        USER,
    ]


# --- several chats throttled at once -----------------------------------------------------------


@pytest.mark.asyncio
async def test_429s_from_three_chats_at_once_pause_every_chat(
    bot: RunningBot, telegram: FakeTelegram, coze: FakeCoze
) -> None:
    throttled_chats = (3001, 3002, 3003)
    fourth = Conversation(telegram, 3004)
    refused_at: dict[int, float] = {}
    fourth_sends: list[float] = []
    coze.outcome_for = lambda url: WorkflowOutcome(text="words", duration=0.05)

    def throttle_three(method: str, params: dict[str, Any]) -> TelegramFault | None:
        chat_id = params.get("chat_id")
        if method == "sendmessage" and chat_id == fourth.user_id:
            fourth_sends.append(time.monotonic())
        if method == "sendmessage" and chat_id in throttled_chats and chat_id not in refused_at:
            refused_at[chat_id] = time.monotonic()
            return too_many_requests(2)
        return None

    telegram.fault_hook = throttle_three
    chats = [Conversation(telegram, user_id) for user_id in throttled_chats]
    for n, chat in enumerate(chats):
        chat.send(f"https://v.douyin.com/many-{n}/")
    await until(lambda: len(refused_at) == 3, "three chats refused")
    await settled(0.2)  # the bot reads the three answers

    fourth.send("https://v.douyin.com/fourth/")
    await fourth.wait_for_messages(2)
    # Every chat was paused until at least 2 s after the last of the three 429s.
    assert fourth_sends[0] >= max(refused_at.values()) + 2
    for chat in chats:
        await chat.wait_for_messages(2)
        assert len(acks(chat)) == 1 and len(results(chat)) == 1
    assert len(acks(fourth)) == 1 and len(results(fourth)) == 1


# --- the rule itself ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_chat_429_pauses_that_chat_only() -> None:
    clock = Clock()
    pauses = Pauses(clock=clock)
    pauses.record(1, 3.0)
    pauses.record(1, 1.0)  # a shorter ask never shortens a pause
    assert pauses.remaining(1) == pytest.approx(3.0)
    assert pauses.remaining(2) <= 0
    assert pauses.remaining(None) <= 0
    clock.now += 3.0
    assert pauses.remaining(1) <= 0


def test_429s_from_three_chats_within_the_window_pause_all_for_the_longest_ask() -> None:
    clock = Clock()
    pauses = Pauses(clock=clock, chats_for_all=3, window=2.0)
    pauses.record(1, 5.0)
    pauses.record(1, 5.0)  # the same chat twice is still one chat
    clock.now += 0.5
    pauses.record(2, 1.0)
    assert pauses.remaining(9) <= 0
    clock.now += 0.5
    pauses.record("-100123", 2.0)
    assert pauses.remaining(9) == pytest.approx(4.0)  # chat 1's ask ends 4 s from now
    assert pauses.remaining(None) <= 0  # calls with no chat are never paused


def test_429s_spread_wider_than_the_window_pause_only_their_chats() -> None:
    clock = Clock()
    pauses = Pauses(clock=clock, chats_for_all=3, window=2.0)
    for chat_id in (1, 2, 3):
        pauses.record(chat_id, 10.0)
        clock.now += 1.5
    assert pauses.remaining(4) <= 0
    assert pauses.remaining(3) > 0 and pauses.remaining(1) > 0

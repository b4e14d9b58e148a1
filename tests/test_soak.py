"""`make soak`, small: the real bot process under every fault at once, killed once mid-way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.runtime import running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.proxy import RoundRobinProxy
from simulators.soak import SoakOptions, format_tally, free_port, run_soak
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


# The round-robin proxy in front of several instances (simulators/proxy.py).


@asynccontextmanager
async def upstream(name: str, *, hang_up: bool = False) -> AsyncIterator[str]:
    """A tiny server that answers with its name (or closes the connection without answering)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if hang_up:
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.1)
        return web.Response(text=f"{name} {request.method} {request.path_qs} {body.decode()}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def post(url: str, body: str = "") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return response.status, await response.text()


async def test_the_proxy_hands_requests_to_its_upstreams_in_turn() -> None:
    async with upstream("a") as a, upstream("b") as b:
        proxy = RoundRobinProxy([a, b])
        await proxy.start()
        try:
            answers = [await post(f"{proxy.url}/webhook/coze?x={k}", "body") for k in range(4)]
        finally:
            await proxy.stop()
    assert answers == [
        (200, "a POST /webhook/coze?x=0 body"),
        (200, "b POST /webhook/coze?x=1 body"),
        (200, "a POST /webhook/coze?x=2 body"),
        (200, "b POST /webhook/coze?x=3 body"),
    ]
    assert [(r.upstream, r.status) for r in proxy.records] == [(0, 200), (1, 200)] * 2


async def test_the_proxy_passes_over_an_upstream_that_refuses_connections() -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with upstream("alive") as alive:
        proxy = RoundRobinProxy([dead, alive], fail_timeout=30.0)
        await proxy.start()
        try:
            answers = [await post(proxy.url + "/x") for _ in range(3)]
        finally:
            await proxy.stop()
    assert answers == [(200, "alive POST /x ")] * 3
    assert proxy.refused[0] == 1  # then skipped for fail_timeout
    assert [r.upstream for r in proxy.records] == [1, 1, 1]


async def test_the_proxy_does_not_send_a_request_an_upstream_broke_off_to_another() -> None:
    async with upstream("broken", hang_up=True) as broken, upstream("alive") as alive:
        proxy = RoundRobinProxy([broken, alive])
        await proxy.start()
        try:
            first = await post(proxy.url + "/webhook/telegram", "update")
        finally:
            await proxy.stop()
    assert first[0] == 502  # it may have had its effect: the client decides whether to retry
    assert [(r.upstream, r.status) for r in proxy.records] == [(0, None)]
    assert proxy.broken[0] == 1


async def test_the_proxy_answers_502_when_every_upstream_refuses() -> None:
    proxy = RoundRobinProxy([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    await proxy.start()
    try:
        assert (await post(proxy.url + "/x"))[0] == 502
    finally:
        await proxy.stop()
    assert proxy.unavailable == 1 and proxy.records == []

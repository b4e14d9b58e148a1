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
from simulators.proxy import Forwarded, RoundRobinProxy
from simulators.soak import (
    Life,
    Scrape,
    Sender,
    SoakOptions,
    TaskRow,
    TelegramLimit,
    _bracket,
    _explained,
    _status_is,
    format_tally,
    free_port,
    parse_metrics,
    run_soak,
)
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


# The soak's own judgement, on made-up figures (no processes).


async def test_telegram_limit_lets_a_full_bucket_through_then_answers_429_until_it_drains() -> None:
    limit = TelegramLimit(rate=10.0, tolerance=0.0)
    assert all(limit.admit() for _ in range(10))
    assert not limit.admit() and limit.refused == 1
    limit._at -= 0.5  # half a second later: five more
    assert sum(limit.admit() for _ in range(8)) == 5
    assert limit.peak == pytest.approx(10, abs=0.1)


def sender(at: float, *, seconds: float = 0.1, gone: float | None = None) -> Sender:
    return Sender(instance=1, at=at, seconds=seconds, life_ended=gone)


def task_row(**flags: bool) -> TaskRow:
    values = {"send_timed_out": False, "resent_after_crash": False} | flags
    return TaskRow(1, "https://v.douyin.com/soak-1/", 7, "completed", True, False,
                   delivery_attempts=1, retry_count=0, **values)  # fmt: skip


async def test_a_second_copy_is_explained_only_by_a_flag_that_fits_what_the_taps_saw() -> None:
    copies = [[10, 11]]
    # Resent after a crash: only if the first sender was gone before the second copy.
    resent = [task_row(resent_after_crash=True)]
    assert _explained(resent, copies, {10: sender(1.0, gone=1.5), 11: sender(2.0)}, 2.0)
    assert not _explained(resent, copies, {10: sender(1.0, gone=5.0), 11: sender(2.0)}, 2.0)
    assert not _explained(resent, copies, {10: sender(1.0), 11: sender(2.0)}, 2.0)
    # Timed out: only if the first copy's reply was held past the bot's timeout.
    timed_out = [task_row(send_timed_out=True)]
    assert _explained(timed_out, copies, {10: sender(1.0, seconds=3.5), 11: sender(5.0)}, 2.0)
    assert not _explained(timed_out, copies, {10: sender(1.0), 11: sender(1.1)}, 2.0)
    # No flag: never.
    assert not _explained([task_row()], copies, {10: sender(1.0, gone=1.5), 11: sender(2.0)}, 2.0)


async def test_a_metric_is_bracketed_by_what_was_answered_and_what_was_sent_around_its_scrape() -> (
    None
):
    life = Life(instance=1, started=0.0, ended=20.0, end="SIGKILL")
    life.scrape = Scrape(began=10.0, ended=10.2, samples={})
    records = [
        Forwarded(0, "POST", "/webhook/coze", 1.0, 1.1, 200),  # answered before: counted
        Forwarded(0, "POST", "/webhook/coze", 2.0, 2.1, 404),  # another answer
        Forwarded(0, "POST", "/webhook/coze", 9.9, 10.1, 200),  # answered during the scrape
        Forwarded(0, "POST", "/webhook/coze", 10.0, None, None),  # broken off: unknown
        Forwarded(0, "POST", "/webhook/coze", 11.0, 11.1, 200),  # after: not counted
    ]
    # 200: at least the one answered before the scrape began; at most that one, the one
    # answered during the scrape and the one broken off (its answer is unknown).
    assert _bracket([life], lambda _: records, _status_is("200")) == (1, 3)
    assert _bracket([life], lambda _: records, _status_is("404")) == (1, 2)


async def test_a_scrape_sums_the_samples_that_carry_the_labels_asked_for() -> None:
    scrape = Scrape(
        0.0,
        0.1,
        parse_metrics(
            'link2text_coze_calls_total{call="start",result="ok"} 5\n'
            'link2text_coze_calls_total{call="start",result="coze_busy"} 2\n'
            'link2text_coze_calls_total{call="run_history",result="ok"} 3\n'
        ),
    )
    assert scrape.value("link2text_coze_calls_total") == 10
    assert scrape.value("link2text_coze_calls_total", call="start") == 7
    assert scrape.value("link2text_coze_calls_total", call="start", result="ok") == 5
    assert scrape.labels("link2text_coze_calls_total", "result") == {"ok", "coze_busy"}

"""bot.telegram_request.AiohttpRequest, PTB's transport on aiohttp, against the fake Bot API:
what PTB expects of a transport (status and body back, TimedOut and NetworkError, forms and
uploads as HTTPXRequest sends them), and a session that is always closed."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from collections.abc import Iterator

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.runtime import StartupError, running_bot
from bot.telegram_request import AiohttpRequest, _without_url
from simulators.coze import FakeCoze
from simulators.soak import free_port
from simulators.telegram import FakeTelegram, UploadedFile
from tests.conftest import Conversation, make_settings

pytestmark = pytest.mark.asyncio

USER = 42


def seconds(value: object) -> float:
    total_seconds = getattr(value, "total_seconds", None)
    return float(total_seconds() if total_seconds else value)  # type: ignore[arg-type]


@pytest.fixture
def tg(telegram: FakeTelegram) -> FakeTelegram:
    """conftest's fake Bot API, with a chat the bot may write to."""
    telegram.user_sends(USER, "hi")
    return telegram


def bot_on(url: str, token: str, request: AiohttpRequest) -> telegram.Bot:
    return telegram.Bot(
        token,
        base_url=url,
        request=request,
        get_updates_request=AiohttpRequest(connection_pool_size=1),
    )


class Unclosed:
    """What aiohttp says, when collected, of sessions and connectors left open: its
    ResourceWarnings and the event loop's error log lines."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self.caught = caught
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append(record.getMessage())

    def reports(self) -> list[str]:
        for _ in range(3):  # a session's connector is freed when the session is collected
            gc.collect()
            # A warning holds its source (the session): kept as text only.
            self.said.extend(str(w.message) for w in self.caught)
            self.caught.clear()
        return [line for line in self.said if "Unclosed" in line]


@pytest.fixture
def unclosed() -> Iterator[Unclosed]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        watch = Unclosed(caught)
        handler = logging.Handler(logging.ERROR)
        handler.emit = watch.emit  # type: ignore[method-assign]
        logging.getLogger("asyncio").addHandler(handler)
        try:
            yield watch
        finally:
            watch.reports()
            logging.getLogger("asyncio").removeHandler(handler)


# ------------------------------------------------------------------ timeouts


async def test_a_reply_slower_than_the_read_timeout_is_timed_out(tg: FakeTelegram) -> None:
    async with bot_on(tg.api_base_url, tg.token, AiohttpRequest(read_timeout=0.2)) as bot:
        tg.delay_next("sendMessage", 1.0)
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await bot.send_message(USER, "slow")  # the instance's read timeout: 0.2 s
        assert time.monotonic() - started < 0.9
        # Telegram had it: a timed-out send may have been delivered (the delivery loop's rule).
        assert [m.text for m in tg.messages(USER)] == ["slow"]

        # A call's own read timeout wins over the instance's (DEFAULT_NONE is "not given").
        tg.delay_next("sendMessage", 0.4)
        message = await bot.send_message(USER, "patient", read_timeout=2.0)
        assert message.text == "patient"


async def test_an_upload_the_server_never_reads_times_out() -> None:
    """aiohttp has no write timeout: the whole request is bounded by connect + write + read."""
    release = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await release.wait()

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpRequest(connect_timeout=0.5, read_timeout=0.2, media_write_timeout=0.2)
    bot = bot_on(f"http://127.0.0.1:{port}/bot", "123456:TEST-TOKEN", request)
    await request.initialize()
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            # Far more than the socket buffers hold: the upload stalls.
            big = InputFile(b"x" * (32 << 20), filename="big.txt")
            await asyncio.wait_for(bot.send_document(USER, document=big), 10)
        assert time.monotonic() - started < 5
    finally:
        await request.shutdown()
        release.set()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_full_pool_times_out_without_sending(tg: FakeTelegram) -> None:
    request = AiohttpRequest(connection_pool_size=1, pool_timeout=0.1, read_timeout=5.0)
    async with bot_on(tg.api_base_url, tg.token, request) as bot:
        tg.delay_next("sendMessage", 0.5)
        first = asyncio.create_task(bot.send_message(USER, "first"))
        await tg.wait_for(lambda: tg.held_replies == 1, 5)
        with pytest.raises(TimedOut, match="Pool timeout"):
            await bot.send_message(USER, "second")
        await first
        assert [m.text for m in tg.messages(USER)] == ["first"]
        assert [call["text"] for call in tg.calls_of("sendMessage")] == ["first"]


# ------------------------------------------------------------------ network errors


async def test_a_refused_connection_is_a_network_error_without_the_token() -> None:
    port = free_port()  # a port nobody listens on
    token = "123456:SECRET-TOKEN"
    async with AiohttpRequest() as request:
        with pytest.raises(NetworkError) as raised:
            await request.post(f"http://127.0.0.1:{port}/bot{token}/getMe")
    assert not isinstance(raised.value, TimedOut)
    assert raised.value.message.startswith("aiohttp.ClientConnectorError: ")
    assert token not in raised.value.message


async def test_a_proxy_named_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with httpx before: operators where Telegram is blocked set HTTPS_PROXY."""
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with AiohttpRequest() as request:
            assert await request.post("http://api.telegram.invalid/bot1:T/getMe") is True
    finally:
        await runner.cleanup()
    assert seen == ["http://api.telegram.invalid/bot1:T/getMe"]


async def test_an_error_message_naming_the_url_loses_it() -> None:
    url = "http://127.0.0.1:8081/bot123456:SECRET-TOKEN/sendDocument"
    error = aiohttp.ClientOSError(32, f"Can not write request body for {url}")
    message = _without_url(error, url)
    assert "SECRET-TOKEN" not in message
    assert "Can not write request body for" in message
    # A message naming only the URL's path (where the token is) loses that too.
    path_only = OSError("Cannot connect to /bot123456:SECRET-TOKEN/sendDocument [refused]")
    message = _without_url(path_only, url)
    assert message == "Cannot connect to <url> [refused]"


# ------------------------------------------------------------------ what PTB makes of replies


async def test_a_429_becomes_retry_after_and_other_refusals_their_errors(
    tg: FakeTelegram,
) -> None:
    async with bot_on(tg.api_base_url, tg.token, AiohttpRequest()) as bot:
        tg.fail_next(
            "sendMessage", status=429, description="Too Many Requests: retry after 7", retry_after=7
        )
        with pytest.raises(RetryAfter) as throttled:
            await bot.send_message(USER, "throttled")
        assert seconds(throttled.value.retry_after) == 7

        tg.fail_next("sendMessage", status=400, description="Bad Request: message is too long")
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message(USER, "refused")

        tg.fail_next("sendMessage", status=403, description="Forbidden: bot was blocked")
        with pytest.raises(Forbidden, match="blocked"):
            await bot.send_message(USER, "blocked")

        assert tg.messages(USER) == []
        assert (await bot.send_message(USER, "through")).text == "through"


# ------------------------------------------------------------------ forms and uploads


async def test_a_form_arrives_intact(tg: FakeTelegram) -> None:
    text = "a & b = c + d? 100% 全文 😀\nsecond line"
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Retry", callback_data="r:42:1")]])
    async with bot_on(tg.api_base_url, tg.token, AiohttpRequest()) as bot:
        await bot.send_message(USER, text, reply_markup=markup)
    (message,) = tg.messages(USER)
    assert message.text == text
    assert message.buttons() == [("Retry", "r:42:1")]


@pytest.mark.parametrize("filename", ["task-7.txt", "заметки 全文.txt"])
async def test_a_document_arrives_intact_with_its_filename(tg: FakeTelegram, filename: str) -> None:
    content = bytes(range(256)) * 64 + "全文\r\n--boundary?\r\n".encode()
    async with bot_on(tg.api_base_url, tg.token, AiohttpRequest()) as bot:
        sent = await bot.send_document(
            USER, document=InputFile(content, filename=filename), caption="the text: 全文"
        )
    assert sent.document is not None and sent.document.file_name == filename
    (params,) = tg.calls_of("sendDocument")
    upload = params["document"]
    assert isinstance(upload, UploadedFile)
    assert (upload.filename, upload.content_type, upload.data) == (filename, "text/plain", content)
    assert params["chat_id"] == USER and params["caption"] == "the text: 全文"
    (message,) = tg.messages(USER)
    assert (message.document, message.filename) == (content, filename)
    assert message.text == "the text: 全文"


# ------------------------------------------------------------------ the session's life


# Read through functions: mypy would keep what an assert on the attribute narrowed it to
# (`is not None`, `not closed`) past the shutdown that changes it, and call the rest unreachable.
def session_of(request: AiohttpRequest) -> aiohttp.ClientSession | None:
    return request._session


def is_closed(session: aiohttp.ClientSession) -> bool:
    return session.closed


async def test_shutdown_closes_the_session_and_initialize_opens_another(
    tg: FakeTelegram, unclosed: Unclosed
) -> None:
    request = AiohttpRequest()
    bot = bot_on(tg.api_base_url, tg.token, request)
    async with bot:
        await bot.send_message(USER, "one")  # a connection is open, kept for the next call
        first = session_of(request)
        assert first is not None and not is_closed(first)
    assert is_closed(first) and session_of(request) is None
    with pytest.raises(NetworkError, match="not initialized"):
        await bot.send_message(USER, "after shutdown")

    async with bot:  # PTB may initialize a bot again after a shutdown
        await bot.send_message(USER, "two")
        second = session_of(request)
        assert second is not None and second is not first and not second.closed
    assert [m.text for m in tg.messages(USER)] == ["one", "two"]

    del bot, request, first, second
    assert unclosed.reports() == []


async def test_a_request_left_open_is_reported(tg: FakeTelegram, unclosed: Unclosed) -> None:
    """The check above can fail: a session never shut down is reported when collected."""
    request = AiohttpRequest()
    await request.initialize()
    await request.post(f"{tg.api_base_url}{tg.token}/getMe")
    del request
    assert unclosed.reports()


async def test_the_bot_closes_its_sessions_when_telegram_rejects_the_token(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, unclosed: Unclosed
) -> None:
    settings = make_settings(database_url, telegram, coze, telegram={"token": "999999:WRONG"})
    with pytest.raises(StartupError, match="rejected by Telegram"):
        async with running_bot(settings):
            pass
    assert unclosed.reports() == []


async def test_the_bot_closes_its_sessions_when_it_stops(
    database_url: str,
    telegram: FakeTelegram,
    coze: FakeCoze,
    chat: Conversation,
    unclosed: Unclosed,
) -> None:
    async with running_bot(make_settings(database_url, telegram, coze)):
        chat.send("/start")  # getUpdates brings it, sendMessage answers: both sessions used
        await chat.wait_for_messages(1)
    assert unclosed.reports() == []

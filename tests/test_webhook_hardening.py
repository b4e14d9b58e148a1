"""The public webhook under every way a request can be wrong, over real sockets.

Each test sends one kind of wrong request to the running bot and checks what a client sees
(a 4xx, never a 5xx) and what must never happen: a traceback in the log, more than one line
about the request, the request's bytes or token in the log, a change to the waiting task.
Then the connections: idle, half-sent and dribbled requests are closed by the server, a
ceiling on connections keeps room for new ones, and under a lowered open-file limit (a child
process) 500 idle connections still leave a valid callback answered with a quiet log. Last,
property tests of the body parser and the encodings.

The bot here is shared by the module (one start for all tests); its waiting task must never
change, so every test that changes a task makes one of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import socket
import sys
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.logs import OneLine, ThrottleAcceptErrors
from bot.runtime import running_bot
from coze import callback_token
from simulators.coze import FakeCoze
from simulators.settings import bot_settings, to_toml
from simulators.telegram import FakeTelegram
from storage import Task, TaskState
from tests.conftest import CALLBACK_SECRET, Conversation, eventually, make_settings, settled
from webhook import HEALTH_CHECK, ServerLimits, WebhookRunner, WebhookSite, create_app
from webhook.contract import parse_callback
from webhook.encoding import Encoding, content_encoding, decode_body
from webhook.refusal import Refusal
from webhook.telegram import _parse as parse_update

ROOT = Path(__file__).resolve().parent.parent
on_server = pytest.mark.asyncio(loop_scope="module")
MARK = "hardening-marker-5f1c"  # in the bytes of every bad request: must never be logged
LIMIT = 16 * 1024  # server.max_callback_bytes here
TIMEOUT = 0.3  # server.keepalive_timeout_seconds and read_timeout_seconds here
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class Server:
    port: int
    chat: Conversation
    waiting: Task  # a run that started and waits for its callback; no test may change it
    links: int = 0

    @property
    def token(self) -> str:
        """The waiting task's valid callback token: must never be logged."""
        return callback_token(CALLBACK_SECRET, self.waiting.run_id)

    async def new_task(self) -> Task:
        """Another task of its own, processing, for a test that changes one."""
        newest = await Task.all().order_by("-id").first()
        assert newest is not None
        self.links += 1
        self.chat.send(f"https://v.douyin.com/own-{self.links}/")
        new = Task.filter(id__gt=newest.id, state=TaskState.PROCESSING)

        async def started() -> bool:
            return await new.exists()

        await eventually(started, what="a new task's run started")
        return await new.get()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with FakeTelegram() as telegram, FakeCoze(callbacks_enabled=False) as coze:
        overrides = {
            "max_callback_bytes": LIMIT,
            "keepalive_timeout_seconds": TIMEOUT,
            "read_timeout_seconds": TIMEOUT,
        }
        settings_ = make_settings(
            tmp_path_factory.mktemp("hardening"), telegram, coze, server=overrides
        )
        async with running_bot(settings_) as bot:
            chat = Conversation(telegram)
            chat.send("https://v.douyin.com/waiting/")

            async def started() -> bool:
                return await Task.filter(state=TaskState.PROCESSING).exists()

            await eventually(started, what="the waiting task's run started")
            waiting = await Task.get(state=TaskState.PROCESSING)
            yield Server(int(bot.public_url.rsplit(":", 1)[1]), chat, waiting)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything at INFO, and the webhook's own lines at DEBUG too."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="webhook")
    return caplog


# ---- helpers ----------------------------------------------------------------------------------


def request(
    body: bytes | str = b"",
    *,
    method: str = "POST",
    path: str = "/webhook/coze",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP/1.1 request with Connection: close and the body's Content-Length."""
    raw = body.encode() if isinstance(body, str) else body
    fields = {"Host": "127.0.0.1", "Connection": "close", "Content-Type": "application/json"}
    fields["Content-Length"] = str(len(raw))
    fields.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + raw


def callback(run_id: str, **fields: Any) -> str:
    """A callback body: the right token for `run_id` unless `fields` say otherwise."""
    body: dict[str, Any] = {
        "task_id": run_id,
        "token": callback_token(CALLBACK_SECRET, run_id),
        "status": "success",
        "text": "the words",
        "error": "",
        "progress": 100,
    }
    body.update(fields)
    return json.dumps(body)


@dataclass
class Reply:
    status: int | None  # None: closed without an answer
    headers: dict[str, str]
    body: bytes


async def exchange(port: int, data: bytes) -> Reply:
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):  # a guard against hanging, not a measurement
            raw = await reader.read()
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not raw or not lines[0].startswith("HTTP/"):
        return Reply(None, {}, raw)
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Reply(int(lines[0].split()[1]), headers, body)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until the server closes the connection (True), failing after a generous guard."""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(10):
            while await reader.read(1024):
                pass
    return True


def assert_logged_once_and_clean(
    caplog: pytest.LogCaptureFixture, *forbidden: str, lines: int = 1
) -> None:
    """Exactly `lines` short webhook line(s); no record with a traceback, a control character,
    the marker or anything in `forbidden` (tokens, bodies)."""
    ours = [r for r in caplog.records if r.name.startswith("webhook")]
    assert len(ours) == lines, [r.getMessage() for r in ours]
    for record in caplog.records:
        message = record.getMessage()
        assert record.exc_info is None and record.exc_text is None, message
        assert "Traceback" not in message
        assert not _CONTROL.search(message), message
        for text in (MARK, *forbidden):
            assert text not in message, message
    for record in ours:
        assert len(record.getMessage()) < 200


async def assert_unchanged(server: Server) -> None:
    now = await Task.get(id=server.waiting.id)
    assert (now.state, now.progress, now.callback_received) == (TaskState.PROCESSING, 0, False)
    assert now.result_text is None


def partial(body: str, declared: int) -> bytes:
    """A request announcing a body of `declared` bytes, with only `body` of it."""
    data = request(body)
    return data.replace(
        f"Content-Length: {len(body)}".encode(), f"Content-Length: {declared}".encode()
    )


async def refused(server: Server, data: bytes, status: int) -> Reply:
    reply = await exchange(server.port, data)
    assert reply.status == status, reply
    assert json.loads(reply.body)["ok"] is False
    await assert_unchanged(server)
    return reply


async def refused_with_headers(
    server: Server, log: pytest.LogCaptureFixture, headers: dict[str, str], status: int
) -> None:
    """The waiting task's callback, its text the marker, sent with `headers`: refused with
    `status`, changing nothing, logged once, neither token nor marker in the log."""
    body = callback(server.waiting.run_id, text=MARK)
    await refused(server, request(body, headers=headers), status)
    assert_logged_once_and_clean(log, server.token)


# ---- the body ---------------------------------------------------------------------------------


@on_server
async def test_a_body_that_is_not_json_is_400(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    await refused(server, request(f"not json {MARK}"), 400)
    assert_logged_once_and_clean(log)


@on_server
async def test_an_empty_body_is_400(server: Server, log: pytest.LogCaptureFixture) -> None:
    await refused(server, request(""), 400)
    assert_logged_once_and_clean(log)


@on_server
async def test_json_that_is_not_an_object_is_400(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    await refused(server, request(json.dumps([server.waiting.run_id, MARK])), 400)
    assert_logged_once_and_clean(log)


@on_server
async def test_a_missing_field_is_400(server: Server, log: pytest.LogCaptureFixture) -> None:
    body = json.loads(callback(server.waiting.run_id, text=MARK))
    del body["status"]
    await refused(server, request(json.dumps(body)), 400)
    assert_logged_once_and_clean(log, body["token"])


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "done"},
        {"progress": 150},
        {"progress": "50"},
        {"progress": True},
        {"progress": 50.0},
        {"text": 42},
        {"text": ["a"]},
        {"task_id": ""},
        {"task_id": "x" * 65},
        {"token": None},
        {"token": "t" * 129},
    ],
    ids=[
        "unknown-status",
        "progress-range",
        "progress-string",
        "progress-bool",
        "progress-float",
        "text-number",
        "text-list",
        "empty-id",
        "long-id",
        "null-token",
        "long-token",
    ],
)
@on_server
async def test_a_field_of_the_wrong_type_or_range_is_400(
    server: Server, log: pytest.LogCaptureFixture, fields: dict[str, Any]
) -> None:
    body = callback(server.waiting.run_id, error=MARK, **fields)
    await refused(server, request(body), 400)
    assert_logged_once_and_clean(log, server.token)


@on_server
async def test_invalid_utf8_is_400(server: Server, log: pytest.LogCaptureFixture) -> None:
    body = callback(server.waiting.run_id, text=MARK).encode()
    body = body.replace(MARK.encode(), b"\xff\xfe" + MARK.encode())
    await refused(server, request(body), 400)
    assert_logged_once_and_clean(log)


@on_server
async def test_json_nested_a_hundred_thousand_deep_is_400(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    body = f'{{"{MARK}": ' + "[" * 100_000 + "]" * 100_000 + "}"
    await refused(server, request(body[:LIMIT]), 400)
    await refused(server, request('{"a":' * 1_000 + "1" + "}" * 1_000), 400)
    assert_logged_once_and_clean(log, lines=2)


@on_server
async def test_a_lone_surrogate_is_400(server: Server, log: pytest.LogCaptureFixture) -> None:
    # Valid token and all: a string no UTF-8 text can hold never reaches the database.
    body = callback(server.waiting.run_id, text=f"{MARK} \\ud800").replace("\\\\ud800", "\\ud800")
    assert "\\ud800" in body
    await refused(server, request(body), 400)
    assert_logged_once_and_clean(log, server.token)


@on_server
async def test_nul_and_control_characters_in_the_text_pass_and_never_break_a_log_line(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    task = await server.new_task()
    text = f"first line\nNUL\x00 BEL\x07 ESC\x1b[2J CR\r LS\u2028 NEL\x85 {MARK}"
    reply = await exchange(server.port, request(callback(task.run_id, text=text)))
    assert reply.status == 200
    stored = await Task.get(id=task.id)
    assert stored.state == TaskState.COMPLETED and stored.result_text is not None
    assert "\x00" not in stored.result_text and MARK in stored.result_text
    assert_logged_once_and_clean(log, lines=0)
    await assert_unchanged(server)


# ---- the token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["é" * 64, "字" * 40 + MARK, "\x00" * 64, MARK + "😀", "0" * 64],
    ids=["latin", "cjk", "nul", "emoji", "zeros"],
)
@on_server
async def test_a_wrong_token_of_any_characters_is_401(
    server: Server, log: pytest.LogCaptureFixture, token: str
) -> None:
    await refused(server, request(callback(server.waiting.run_id, token=token, text=MARK)), 401)
    assert_logged_once_and_clean(log, token)


@on_server
async def test_a_correct_token_for_a_run_never_stored_is_404(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    body = callback("0123456789abcdef0123456789abcdef", text=MARK)
    await refused(server, request(body), 404)
    assert_logged_once_and_clean(log, callback_token(CALLBACK_SECRET, "0123456789abcdef" * 2))


# ---- Content-Encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-gzip"])
@on_server
async def test_a_plain_body_called_compressed_is_400(
    server: Server, log: pytest.LogCaptureFixture, encoding: str
) -> None:
    await refused_with_headers(server, log, {"Content-Encoding": encoding}, 400)


@pytest.mark.parametrize(
    "encoding, pack",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),
        ("identity", lambda data: data),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw", "identity"],
)
@on_server
async def test_a_compressed_body_is_read_like_a_plain_one(
    server: Server, log: pytest.LogCaptureFixture, encoding: str, pack: Any
) -> None:
    task = await server.new_task()
    body = pack(callback(task.run_id, text=f"inflated {encoding}").encode())
    reply = await exchange(server.port, request(body, headers={"Content-Encoding": encoding}))
    assert reply.status == 200
    assert (await Task.get(id=task.id)).result_text == f"inflated {encoding}"
    await assert_unchanged(server)


@on_server
async def test_a_zip_bomb_is_413(server: Server, log: pytest.LogCaptureFixture) -> None:
    bomb = gzip.compress(b"\0" * 10_000_000, compresslevel=9)  # 10 MB inflated, ~10 KB sent
    assert len(bomb) < LIMIT
    await refused(server, request(bomb, headers={"Content-Encoding": "gzip"}), 413)
    assert_logged_once_and_clean(log)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip", MARK])
@on_server
async def test_an_encoding_we_do_not_inflate_is_415(
    server: Server, log: pytest.LogCaptureFixture, encoding: str
) -> None:
    await refused_with_headers(server, log, {"Content-Encoding": encoding}, 415)


# ---- headers, method, path, size --------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", MARK]
)
@on_server
async def test_a_content_type_other_than_json_is_415(
    server: Server, log: pytest.LogCaptureFixture, content_type: str
) -> None:
    await refused_with_headers(server, log, {"Content-Type": content_type}, 415)


@on_server
async def test_json_with_a_charset_or_a_json_suffix_is_read(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.coze+json"):
        body = callback("0123456789abcdef0123456789abcdef")
        reply = await exchange(server.port, request(body, headers={"Content-Type": content_type}))
        assert reply.status == 404  # read and understood: a run never stored


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@on_server
async def test_a_wrong_method_is_405(
    server: Server, log: pytest.LogCaptureFixture, method: str
) -> None:
    reply = await refused(server, request(callback(server.waiting.run_id), method=method), 405)
    assert reply.headers["Allow"] == "POST"
    assert_logged_once_and_clean(log, server.token)


@pytest.mark.parametrize("path", ["/", "/webhook", "/webhook/coze/x", f"/{MARK}"])
@on_server
async def test_an_unknown_path_is_404(
    server: Server, log: pytest.LogCaptureFixture, path: str
) -> None:
    await refused(server, request(callback(server.waiting.run_id), path=path), 404)
    assert_logged_once_and_clean(log, server.token)


@on_server
async def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    head = request(b"").replace(b"Content-Length: 0", b"Content-Length: 1000000000")
    await refused(server, head + MARK.encode(), 413)
    assert_logged_once_and_clean(log)


@on_server
async def test_a_chunked_body_over_the_limit_is_413(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    chunk = (MARK * 100).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    data = request(body, headers={"Transfer-Encoding": "chunked"})
    data = re.sub(rb"Content-Length: \d+\r\n", b"", data)
    await refused(server, data, 413)
    assert_logged_once_and_clean(log)


@pytest.mark.parametrize(
    "headers",
    [{"X-Big": MARK * 1_000}, {f"X-{n}": MARK for n in range(200)}],
    ids=["one-huge-header", "too-many-headers"],
)
@on_server
async def test_huge_headers_are_400(
    server: Server, log: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    reply = await exchange(server.port, request(callback(server.waiting.run_id), headers=headers))
    assert reply.status == 400
    await assert_unchanged(server)
    assert_logged_once_and_clean(log)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK.encode() + b"\r\n\r\n",
        f"GET / HTTP/1.1 {MARK}\r\n\r\n".encode(),
        f"POST /webhook/coze HTTP/1.1\r\nContent-Length: {MARK}\r\n\r\n".encode(),
        b"POST /webhook/coze HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
        f"POST /webhook/coze HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{MARK}".encode(),
        f"POST /webhook/coze HTTP/1.1\r\nX: a\x00{MARK}\r\n\r\n".encode(),
    ],
    ids=["tls-hello", "bad-request-line", "bad-length", "two-lengths", "bad-chunk", "nul-header"],
)
@on_server
async def test_bytes_that_are_not_http_are_400_in_one_short_line(
    server: Server, log: pytest.LogCaptureFixture, data: bytes
) -> None:
    reply = await exchange(server.port, data)
    assert reply.status == 400
    await assert_unchanged(server)
    assert_logged_once_and_clean(log)


# ---- connections ------------------------------------------------------------------------------


@on_server
async def test_a_body_cut_short_by_the_client_changes_nothing(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    data = request(callback(server.waiting.run_id, text=MARK * 10))
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data[: len(data) - 50])
    await writer.drain()
    writer.close()  # the client is gone mid-body

    async def logged() -> bool:
        return any(r.name.startswith("webhook") for r in log.records)

    await eventually(logged, what="the cut-short body logged")
    await assert_unchanged(server)
    assert (await exchange(server.port, request(b"", method="GET", path="/healthz"))).status == 200
    assert_logged_once_and_clean(log, server.token)


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /webhook/coze HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        partial('{"task_id": "' + MARK, 500),
    ],
    ids=["nothing", "half-the-headers", "half-the-body"],
)
@on_server
async def test_a_connection_that_stops_sending_is_closed_by_the_server(
    server: Server, log: pytest.LogCaptureFixture, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(sent)
    await writer.drain()
    try:
        assert await closed_by_server(reader)
    finally:
        writer.close()
    await assert_unchanged(server)
    assert_logged_once_and_clean(log, lines=_webhook_lines(log))


def _webhook_lines(caplog: pytest.LogCaptureFixture) -> int:
    """Lines about dropped connections come once a minute at most: zero or one here."""
    count = sum(r.name.startswith("webhook") for r in caplog.records)
    assert count <= 1
    return count


@on_server
async def test_headers_sent_a_byte_at_a_time_are_cut_off(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    data = request(callback(server.waiting.run_id))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    closing = asyncio.create_task(closed_by_server(reader))
    sent = 0
    try:
        with contextlib.suppress(ConnectionError):
            while sent < len(data) and not closing.done():
                writer.write(data[sent : sent + 1])
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.02)  # far slower than any real client
        assert await closing
    finally:
        writer.close()
    assert sent < len(data)  # the server gave up before the request was complete
    await assert_unchanged(server)
    assert_logged_once_and_clean(log, lines=_webhook_lines(log))


@on_server
async def test_a_keep_alive_connection_left_idle_after_its_answer_is_closed(
    server: Server, log: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        assert await closed_by_server(reader)
    finally:
        writer.close()


async def _healthy() -> bool:
    return True


@pytest_asyncio.fixture
async def small_server() -> AsyncIterator[int]:
    """The webhook app alone, with a ceiling of 4 connections and long timeouts."""
    app = create_app(max_callback_bytes=LIMIT)
    app[HEALTH_CHECK] = _healthy
    runner = WebhookRunner(
        app, ServerLimits(keepalive_timeout=30, read_timeout=30, max_connections=4)
    )
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    site = WebhookSite(runner, sock)
    await site.start()
    try:
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()
        sock.close()


@pytest.mark.asyncio
async def test_at_the_ceiling_a_new_connection_closes_the_oldest_idle_one(
    small_server: int,
) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", small_server) for _ in range(4)]
    try:
        reply = await exchange(small_server, request(b"", method="GET", path="/healthz"))
        assert reply.status == 200
        oldest_reader, _ = idle[0]
        assert await closed_by_server(oldest_reader)
    finally:
        for _, writer in idle:
            writer.close()


@pytest.mark.asyncio
async def test_at_the_ceiling_with_every_connection_busy_a_new_one_is_closed(
    small_server: int,
) -> None:
    busy = [await asyncio.open_connection("127.0.0.1", small_server) for _ in range(4)]
    try:
        for _, writer in busy:
            writer.write(b"POST /webhook/coze HTTP/1.1\r\n")  # reading a request: not idle
            await writer.drain()
        await settled(0.2)  # the server has read those first lines
        reply = await exchange(small_server, request(b"", method="GET", path="/healthz"))
        assert reply.status is None  # closed at once, no answer
    finally:
        for _, writer in busy:
            writer.close()


# ---- under a lowered open-file limit (child processes) ------------------------------------------

_BOT_WITH_FEW_FILES = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(sys.argv[2]), hard), hard))
from bot.__main__ import main
sys.exit(main(["--config", sys.argv[1]]))
"""


@pytest.mark.asyncio
async def test_500_idle_connections_under_a_low_file_limit_leave_a_callback_answered(
    tmp_path: Path,
) -> None:
    """The bot in a child process limited to 256 open files (so at most ~190 connections):
    500 idle connections and a few half-sent requests, then a valid callback."""
    async with FakeTelegram() as telegram, FakeCoze(callbacks_enabled=False) as coze:
        sections = bot_settings(telegram, coze, tmp_path, callback_secret=CALLBACK_SECRET)
        sections["server"].update(keepalive_timeout_seconds=0.5, read_timeout_seconds=0.5)
        config = tmp_path / "config.toml"
        config.write_text(to_toml(sections), encoding="utf-8")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BOT_WITH_FEW_FILES, str(config), "256",
            cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stderr is not None
        lines: list[str] = []
        reading = asyncio.create_task(_collect(child.stderr, lines))
        connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            chat = Conversation(telegram)
            chat.send("https://v.douyin.com/few-files/")
            await coze.wait_for(lambda: bool(coze.runs), timeout=30)
            (run,) = coze.runs.values()
            url = run.parameters["callback_url"]
            port = int(url.split(":")[2].split("/")[0])
            storm_starts = len(lines)

            # 500, a hundred at a time: all at once, they can overflow the listening socket's
            # queue (seen under pytest-xdist), and a connection whose handshake the kernel then
            # dropped stays open on this side only, where no server can close it.
            for _ in range(5):
                connections += await asyncio.gather(
                    *(asyncio.open_connection("127.0.0.1", port) for _ in range(100))
                )
                await asyncio.sleep(0.1)
            # The newest connections: each is reading a request, so none is evicted as idle.
            for data in [b"POST /webhook/coze HTTP/1.1\r\nHost: x\r\n", partial(MARK, 900)] * 3:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(data)
                await writer.drain()
                connections.append((reader, writer))

            body = callback(run.parameters["task_id"], text="words after the storm")
            async with (
                aiohttp.ClientSession() as http,
                http.post(url, data=body, headers={"Content-Type": "application/json"}) as reply,
            ):
                assert reply.status == 200
            _, result = await chat.wait_for_messages(2, timeout=20)
            assert result.text is not None and "words after the storm" in result.text

            closed = await asyncio.gather(*(closed_by_server(r) for r, _ in connections))
            assert all(closed)
            storm = lines[storm_starts:]
        finally:
            for _, writer in connections:
                writer.close()
            if child.returncode is None:
                child.terminate()
            async with asyncio.timeout(20):
                await child.wait()
            await reading
    assert child.returncode == 0
    assert not any("Traceback" in line or MARK in line for line in lines), lines
    # A handful: the callback, and a summary line for each kind of connection closed on
    # purpose. (A flood can still outrun the ceiling for a moment, since asyncio accepts a
    # backlog's worth at a time before the guard sees them: EMFILE is then one line a minute.)
    assert len(storm) <= 8, storm
    assert any("connections open: closed" in line for line in storm), storm
    assert sum("cannot accept connections" in line for line in storm) <= 1, storm


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip("\n"))


_SERVER_OUT_OF_FILES = """
import asyncio, resource, sys
from bot.logs import configure_logging
configure_logging("INFO", ())
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
kept = []
async def keep(reader, writer):
    kept.append(writer)
async def main():
    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_accept_errors_past_the_file_limit_are_one_line_a_minute() -> None:
    """asyncio logs "socket.accept() out of system resource" with a traceback on every try,
    a backlog's worth a second; the logging set-up lets one short line through."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVER_OUT_OF_FILES, cwd=ROOT, env={"PATH": "/usr/bin:/bin"},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    port = int(await child.stdout.readline())
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(120))
    )
    await asyncio.sleep(1.2)  # asyncio tries accept() again after a second: a second burst
    child.stdin.write(b"stop\n")
    _, stderr = await child.communicate()
    for _, writer in connections:
        writer.close()
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "cannot accept connections: [Errno 24] Too many open files" in lines[0]


# ---- logging filters ----------------------------------------------------------------------------


def test_one_line_escapes_every_control_character() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "got %r then %s", ("a", "b\nc\x00\x1b\u2028\x85\td"), None
    )
    assert OneLine().filter(record)
    assert record.getMessage() == "got 'a' then b\\x0ac\\x00\\x1b\\u2028\\x85\td"


def test_accept_errors_are_let_through_once_per_period() -> None:
    throttle = ThrottleAcceptErrors(period=3600)
    error = OSError(24, "Too many open files")
    passed = []
    for _ in range(1000):
        record = logging.LogRecord(
            "asyncio", logging.ERROR, __file__, 1,
            "socket.accept() out of system resource\nsocket: <fd=6>", None,
            (OSError, error, None),
        )  # fmt: skip
        if throttle.filter(record):
            passed.append(record)
    (line,) = passed
    assert line.exc_info is None and line.getMessage() == (
        "cannot accept connections: [Errno 24] Too many open files"
    )


# ---- the parser, property-based ---------------------------------------------------------------

STATUSES = ("success", "failed", "processing")


def meets_contract(raw: bytes) -> dict[str, Any] | None:
    """The body's fields if it is what the README's contract describes, else None."""

    def no_constants(name: str) -> object:
        raise ValueError(name)

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    task_id, token = value.get("task_id"), value.get("token")
    progress = value.get("progress")
    ok = (
        isinstance(task_id, str)
        and 1 <= len(task_id) <= 64
        and isinstance(token, str)
        and 1 <= len(token) <= 128
        and value.get("status") in STATUSES
        and all(value.get(key) is None or isinstance(value[key], str) for key in ("text", "error"))
        and (progress is None or (type(progress) is int and 0 <= progress <= 100))
    )
    return value if ok else None


def check_parser(raw: bytes) -> bool:
    """parse_callback on `raw`: a report only for a body meeting the contract, with its
    fields; otherwise a clean 400. Returns whether a report came out."""
    try:
        report = parse_callback(raw)
    except Refusal as refusal:
        assert refusal.status == 400
        assert len(refusal.reason) < 80
        return False
    fields = meets_contract(raw)
    assert fields is not None, raw
    assert (report.run_id, report.token, report.status) == (
        fields["task_id"],
        fields["token"],
        fields["status"],
    )
    assert (report.text, report.error, report.progress) == (
        fields.get("text") or "",
        fields.get("error") or "",
        fields.get("progress"),
    )
    return True


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"update_id": true}', "not an update"),
        (b'{"update_id": 7.0}', "not an update"),
        (b'[{"update_id": 7}]', "not an update"),
        (b'{"update_id": NaN}', "not valid JSON"),
        (b'{"update_id": 7}{}', "not valid JSON"),
        (b"[" * 300 + b"]" * 300, "JSON nested too deep"),
    ],
    ids=["bool-id", "float-id", "array", "nan", "trailing-bytes", "deep"],
)
def test_a_telegram_update_needs_an_integer_update_id(raw: bytes, reason: str) -> None:
    with pytest.raises(Refusal) as refused_:
        parse_update(raw)
    assert (refused_.value.status, refused_.value.reason) == (400, reason)
    assert parse_update(b'{"update_id": 7, "message": {}}') == {"update_id": 7, "message": {}}


# Modest, so the file runs in seconds; no example database in the working tree.
FAST = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_report_only_when_they_meet_the_contract(raw: bytes) -> None:
    check_parser(raw)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["x", "task_id", "token", "status"]) | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)
contract_values = {
    "task_id": st.text(max_size=70) | json_scalars,
    "token": st.text(max_size=130) | json_scalars,
    "status": st.sampled_from([*STATUSES, "done", "SUCCESS", ""]) | json_scalars,
    "text": st.text() | json_scalars | json_values,
    "error": st.text() | json_scalars,
    "progress": st.integers(min_value=-5, max_value=105) | json_scalars,
}
contract_like = st.fixed_dictionaries({}, optional={**contract_values, "extra": json_values})


@FAST
@given(st.one_of(json_values, contract_like), st.booleans())
def test_any_json_value_is_a_report_exactly_when_it_meets_the_contract(
    value: object, ascii_only: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert check_parser(raw) == (meets_contract(raw) is not None)


@FAST
@given(
    st.text(min_size=1, max_size=64),
    st.text(min_size=1, max_size=128),
    st.sampled_from(STATUSES),
    st.none() | st.text(),
    st.none() | st.integers(min_value=0, max_value=100),
)
def test_every_body_meeting_the_contract_is_a_report(
    task_id: str, token: str, status: str, text: str | None, progress: int | None
) -> None:
    body = {
        "task_id": task_id,
        "token": token,
        "status": status,
        "text": text,
        "progress": progress,
    }
    assert check_parser(json.dumps(body).encode())


@FAST
@given(st.binary(max_size=2_000), st.sampled_from(["gzip", "deflate", "identity"]))
def test_any_bytes_in_any_encoding_decode_or_are_refused_cleanly(
    raw: bytes, encoding: Encoding
) -> None:
    try:
        decoded = decode_body(raw, encoding, LIMIT)
    except Refusal as refusal:
        assert refusal.status in (400, 413)
    else:
        assert len(decoded) <= LIMIT


@FAST
@given(st.lists(st.text(max_size=20), max_size=4))
def test_any_content_encoding_header_is_understood_or_415(values: list[str]) -> None:
    try:
        assert content_encoding(values) in ("identity", "gzip", "deflate")
    except Refusal as refusal:
        assert refusal.status == 415


def test_a_zip_bomb_is_refused_without_inflating_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 30_000_000, compresslevel=9)  # 30 MB inflated, ~30 KB
    limit = 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(Refusal) as refused_:
            decode_body(bomb, "gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused_.value.status == 413
    assert peak < 3 * limit

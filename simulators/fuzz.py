"""`make fuzz`: thousands of random requests at the webhook over real sockets, then checks.

``python -m simulators.fuzz [--requests N] [--seed S] [--concurrency C]``

The whole bot runs in this process against the fake Telegram and the fake Coze (whose workflow
never calls back by itself), on a SQLite file in a temporary directory, listening on a port of
127.0.0.1 the OS chooses. A few users each paste a link, so that a few tasks wait for their
callbacks. Each task is given a plan (a success, a failure, progress, or nothing) and its valid
callbacks (some of them twice or three times, some gzipped or chunked) are shuffled among
random requests from one ``random.Random(seed)``: random JSON and random bytes, JSON nested
far too deep, valid-shaped bodies with wrong, foreign or non-ASCII tokens, unknown runs, text
with NUL and control characters, bodies cut short (the client hangs up mid-body), odd
Content-Encodings (a plain body called gzip, unknown and stacked encodings, a zip bomb), wrong
Content-Types, methods and paths, oversized bodies, huge and too many headers, broken framing
and garbage that is not HTTP. Meanwhile three connections measure the server's own timeouts:
one idle, one whose headers stop half-way, one whose body does.

Then it checks that no answer was a 5xx and each was one the contract allows for that request;
that /healthz and a valid callback still get 200; that the database holds exactly the tasks it
had, each as its plan says (the valid callbacks applied, nothing else changed); and that the
log has no traceback, no control character and none of the requests' tokens or bytes. It prints
a table (requests by answer, p50/p99 latency) and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import logging
import random
import re
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.config import Settings
from bot.runtime import running_bot
from coze import callback_token
from simulators.coze import FakeCoze
from simulators.settings import bot_settings
from simulators.telegram import FakeTelegram
from storage import Task, TaskState
from webhook import CALLBACK_PATH
from webhook.contract import CallbackBody

DEFAULT_SEED = 1
DEFAULT_REQUESTS = 3000
SECRET = "fuzz-callback-secret-0123456789abcdef"
MAX_BYTES = 64 * 1024  # server.max_callback_bytes, small so that oversized bodies are cheap
KEEPALIVE = 1.0  # server.keepalive_timeout_seconds
READ_TIMEOUT = 1.0  # server.read_timeout_seconds
ANSWER_WAIT = 10.0  # the longest a request may go unanswered before it counts as a violation
HUNG_UP = 0  # "answer" of a request the client abandoned on purpose
CLOSED = -1  # the server closed the connection without an answer
_FIRST_USER = 70_001
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

Kind = Literal["success", "failed", "progress", "untouched"]


@dataclass
class Plan:
    """What one task should look like at the end, and the callbacks that make it so."""

    run_id: str
    kind: Kind
    text: str = ""
    error: str = ""
    progress: int = 0


@dataclass
class Probe:
    name: str
    data: bytes
    expect: frozenset[int]  # acceptable answers (HUNG_UP: the client hangs up, no answer read)
    pause_after: int = 0  # write this many bytes, pause briefly, write the rest


@dataclass
class Answer:
    name: str
    status: int
    seconds: float


@dataclass
class Report:
    seed: int
    requests: int
    concurrency: int
    answers: list[Answer] = field(default_factory=list)
    timeouts: dict[str, float] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def violate(self, message: str) -> None:
        self.violations.append(message)

    def table(self) -> str:
        by_status: dict[int, list[float]] = defaultdict(list)
        for answer in self.answers:
            by_status[answer.status].append(answer.seconds)
        lines = [
            f"fuzz: {self.requests} requests at {CALLBACK_PATH} and around it "
            f"(seed {self.seed}, {self.concurrency} at a time)",
            f"{'answer':<22}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}",
        ]
        for status in sorted(by_status):
            label = {HUNG_UP: "- (client hung up)", CLOSED: "- (closed, no answer)"}.get(
                status, str(status)
            )
            lines.append(_row(label, by_status[status]))
        lines.append(_row("all", [a.seconds for a in self.answers]))
        lines.append("")
        lines.extend(self.notes)
        lines.append(f"{len(self.violations)} violation(s)" + (":" if self.violations else ", OK"))
        lines.extend(f"  {v}" for v in self.violations[:20])
        if len(self.violations) > 20:
            lines.append(f"  ... and {len(self.violations) - 20} more")
        return "\n".join(lines)


def _row(label: str, seconds: list[float]) -> str:
    if not seconds:
        return f"{label:<22}{0:>9}"
    ordered = sorted(seconds)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"{label:<22}{len(ordered):>9}{p50:>9.1f}{p99:>9.1f}"


# ---- requests ---------------------------------------------------------------------------------


def http(
    body: bytes = b"",
    *,
    method: bytes = b"POST",
    path: bytes = CALLBACK_PATH.encode(),
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes | None = b"application/json",
    length: int | None = None,
) -> bytes:
    """One HTTP/1.1 request, Connection: close; Content-Length is the body's unless given."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers or [])
    if not chunked:
        lines.append(b"Content-Length: " + str(len(body) if length is None else length).encode())
    lines.extend(name + b": " + value for name, value in headers or [])
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    while body:
        size = rng.randint(1, max(1, len(body)))
        out += f"{size:x}\r\n".encode() + body[:size] + b"\r\n"
        body = body[size:]
    return bytes(out + b"0\r\n\r\n")


class Generator:
    """Random requests, all from one seed; `marker` is in every forged token and garbage."""

    def __init__(self, rng: random.Random, run_ids: list[str]) -> None:
        self.rng = rng
        self.run_ids = run_ids
        self.marker = f"fuzzmark{rng.getrandbits(32):08x}"
        self.tokens: set[str] = set()  # every token sent, valid or not

    def body(self, run_id: str, token: str | None = None, **fields: Any) -> dict[str, Any]:
        token = callback_token(SECRET, run_id) if token is None else token
        self.tokens.add(token)
        body: dict[str, Any] = {
            "task_id": run_id,
            "token": token,
            "status": "success",
            "text": "words",
            "error": "",
            "progress": 100,
        }
        body.update(fields)
        return body

    def encode(self, value: object) -> bytes:
        if self.rng.random() < 0.5:
            with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate: escape it
                return json.dumps(value, ensure_ascii=False).encode()
        return json.dumps(value).encode()

    def forged(self) -> str:
        return f"{self.marker}{self.rng.getrandbits(64):016x}"

    def valid(self, plan: Plan) -> Probe:
        if plan.kind == "success":
            body = self.body(plan.run_id, text=plan.text)
        elif plan.kind == "failed":
            body = self.body(plan.run_id, status="failed", text="", error=plan.error)
        else:
            body = self.body(plan.run_id, status="processing", text="", progress=plan.progress)
        raw = self.encode(body)
        roll = self.rng.random()
        if roll < 0.15:
            return Probe(
                "valid, gzip",
                http(gzip.compress(raw), headers=[(b"Content-Encoding", b"gzip")]),
                frozenset({200}),
            )
        if roll < 0.25:
            return Probe(
                "valid, chunked",
                http(chunked(raw, self.rng), headers=[(b"Transfer-Encoding", b"chunked")]),
                frozenset({200}),
            )
        data = http(raw)
        pause = self.rng.randint(1, len(data) - 1) if roll < 0.35 else 0
        return Probe("valid", data, frozenset({200}), pause_after=pause)

    def random(self) -> Probe:
        """One request that is wrong in one random way."""
        name, make = self.rng.choice(self._KINDS)
        return make(self, name)

    def _run(self) -> str:
        return self.rng.choice(self.run_ids)

    def _json_value(self, depth: int = 0) -> object:
        roll = self.rng.random()
        if depth > 4 or roll < 0.45:
            return self.rng.choice(
                [
                    None,
                    True,
                    self.rng.randint(-(10**12), 10**12),
                    self.rng.random() * 1e6,
                    self._text(),
                    self.marker,
                ]
            )
        if roll < 0.7:
            return [self._json_value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        keys = [*CONTRACT_FIELDS, self._text(8), self.marker]
        return {
            self.rng.choice(keys): self._json_value(depth + 1)
            for _ in range(self.rng.randint(0, 7))
        }

    def _text(self, size: int = 40) -> str:
        alphabet = 'abc XYZ 019 "\\/ \n\t\x00\x07\x1b[31m \u2028 é 字 😀 \ud800'
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    # Each of these makes one kind of wrong request; `name` is its row in the report.

    def _random_json(self, name: str) -> Probe:
        raw = json.dumps(self._json_value()).encode()  # ASCII: lone surrogates are escaped
        return Probe(name, http(raw), frozenset({400}))

    def _random_shaped(self, name: str) -> Probe:
        """The contract's keys with random values: wrong somewhere, or a forged token."""
        body = self.body(self._run(), token=self.forged())
        for key in self.rng.sample(sorted(body), self.rng.randint(1, 3)):
            if key == "token":
                continue
            body[key] = self._json_value(3)
        return Probe(name, http(self.encode(body)), frozenset({400, 401}))

    def _random_bytes(self, name: str) -> Probe:
        raw = self.rng.randbytes(self.rng.randint(0, 300)) + self.marker.encode()
        return Probe(name, http(raw), frozenset({400}))

    def _deep_json(self, name: str) -> Probe:
        depth = self.rng.choice([201, 1_000, 30_000])
        opener, closer = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        raw = b'{"task_id":' + opener * depth + b"1" + closer * depth + b"}"
        return Probe(name, http(raw[:MAX_BYTES]), frozenset({400}))

    def _wrong_token(self, name: str) -> Probe:
        run_id = self._run()
        token = self.rng.choice(
            [
                self.forged(),
                callback_token(SECRET, run_id + "x") + self.marker,
                callback_token("not-the-secret-" + self.marker, run_id),
                self.marker + "é字😀\u0000\n",
                self.marker + "\\ud800",
            ]
        )
        return Probe(name, http(self.encode(self.body(run_id, token=token))), frozenset({401}))

    def _control_text(self, name: str) -> Probe:
        text = "line\nbreak\r\x00nul\x07\x1b[2J\u2028\u0085 " + self.marker
        body = self.body(self._run(), token=self.forged(), text=text, error=text)
        return Probe(name, http(self.encode(body)), frozenset({401}))

    def _unknown_run(self, name: str) -> Probe:
        run_id = f"{self.rng.getrandbits(128):032x}"
        return Probe(name, http(self.encode(self.body(run_id))), frozenset({404}))

    def _cut_short(self, name: str) -> Probe:
        data = http(self.encode(self.body(self._run(), token=self.forged())))
        return Probe(name, data[: self.rng.randint(1, len(data) - 1)], frozenset({HUNG_UP}))

    def _gzip_plain(self, name: str) -> Probe:
        raw = self.encode(self.body(self._run(), token=self.forged()))
        encoding = self.rng.choice([b"gzip", b"deflate", b"x-gzip"])
        return Probe(name, http(raw, headers=[(b"Content-Encoding", encoding)]), frozenset({400}))

    def _gzip_forged(self, name: str) -> Probe:
        raw = self.encode(self.body(self._run(), token=self.forged()))
        encoding, packed = self.rng.choice(
            [
                (b"gzip", gzip.compress(raw)),
                (b"deflate", zlib.compress(raw)),
                (b"deflate", zlib.compress(raw, wbits=-15)),
                (b"identity", raw),
            ]
        )
        headers = [(b"Content-Encoding", encoding)]
        return Probe(name, http(packed, headers=headers), frozenset({401}))

    def _odd_encoding(self, name: str) -> Probe:
        raw = self.encode(self.body(self._run(), token=self.forged()))
        encoding = self.rng.choice(
            [b"br", b"zstd", b"compress", b"gzip, gzip", b"deflate, gzip", self.marker.encode()]
        )
        return Probe(name, http(raw, headers=[(b"Content-Encoding", encoding)]), frozenset({415}))

    def _zip_bomb(self, name: str) -> Probe:
        return Probe(name, http(_BOMB, headers=[(b"Content-Encoding", b"gzip")]), frozenset({413}))

    def _wrong_content_type(self, name: str) -> Probe:
        kind = self.rng.choice(
            [b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data", b"x"]
        )
        raw = self.encode(self.body(self._run(), token=self.forged()))
        return Probe(name, http(raw, content_type=kind), frozenset({415}))

    def _wrong_method(self, name: str) -> Probe:
        method = self.rng.choice([b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"post"])
        # A lower-case method is not one HTTP knows: the parser may refuse it (400) first.
        expect = {405, 400} if method.islower() else {405}
        return Probe(name, http(b"{}", method=method), frozenset(expect))

    def _unknown_path(self, name: str) -> Probe:
        path = self.rng.choice([b"/", b"/webhook", b"/webhook/coze/x", b"/" + self.marker.encode()])
        return Probe(name, http(b"{}", path=path), frozenset({404}))

    def _too_large(self, name: str) -> Probe:
        body = self.encode(self.body(self._run(), token=self.forged(), text="x" * MAX_BYTES))
        if self.rng.random() < 0.5:
            return Probe(name, http(body), frozenset({413}))
        headers = [(b"Transfer-Encoding", b"chunked")]
        return Probe(name, http(chunked(body, self.rng), headers=headers), frozenset({413}))

    def _huge_headers(self, name: str) -> Probe:
        if self.rng.random() < 0.5:
            headers = [(b"X-Fuzz", self.marker.encode() * 1_000)]
        else:
            headers = [(f"X-F{n}".encode(), self.marker.encode()) for n in range(200)]
        return Probe(name, http(b"{}", headers=headers), frozenset({400}))

    def _bad_framing(self, name: str) -> Probe:
        data = self.rng.choice(
            [
                http(b"{}", headers=[(b"Content-Length", b"7")]),
                http(b"{}", length=-1),
                http(
                    b"zz\r\n" + self.marker.encode(), headers=[(b"Transfer-Encoding", b"chunked")]
                ),
                http(b"{}", headers=[(b"Transfer-Encoding", b"gzip")]),
                b"POST " + CALLBACK_PATH.encode() + b" HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            ]
        )
        return Probe(name, data, frozenset({400}))

    def _garbage(self, name: str) -> Probe:
        data = self.rng.choice(
            [
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + self.rng.randbytes(64),
                self.rng.randbytes(self.rng.randint(1, 200)),
                b"GET / HTTP/9.9 " + self.marker.encode(),
                self.marker.encode() + b" \x00\xff",
            ]
        )
        # Bytes that never make a request line leave the parser waiting: the read timeout
        # closes the connection without an answer.
        return Probe(name, data + b"\r\n\r\n", frozenset({400, CLOSED}))

    _KINDS = (
        ("random JSON", _random_json),
        ("contract keys, random values", _random_shaped),
        ("random bytes", _random_bytes),
        ("JSON nested too deep", _deep_json),
        ("wrong token", _wrong_token),
        ("control characters", _control_text),
        ("unknown run", _unknown_run),
        ("cut short, hung up", _cut_short),
        ("plain body called gzip", _gzip_plain),
        ("encoded, forged token", _gzip_forged),
        ("unknown encoding", _odd_encoding),
        ("zip bomb", _zip_bomb),
        ("wrong Content-Type", _wrong_content_type),
        ("wrong method", _wrong_method),
        ("unknown path", _unknown_path),
        ("too large", _too_large),
        ("huge headers", _huge_headers),
        ("bad framing", _bad_framing),
        ("not HTTP", _garbage),
    )


CONTRACT_FIELDS = tuple(CallbackBody.model_fields)  # in the contract's order, for the seed
# 20 MB of zeros, about 20 KB gzipped: under the raw limit, far over it inflated.
_BOMB = gzip.compress(b"\0" * 20_000_000, compresslevel=9)


def make_plans(rng: random.Random, run_ids: list[str]) -> list[Plan]:
    kinds: list[Kind] = ["success", "failed", "progress", "untouched"]
    plans = []
    for index, run_id in enumerate(run_ids):
        kind = kinds[index % len(kinds)]
        plans.append(
            Plan(
                run_id,
                kind,
                text=f'words of video {index}: 大家好 😀 "quoted"\nnext line {rng.random()}',
                error=f"video {index} unavailable",
                progress=rng.randint(1, 99),
            )
        )
    return plans


def probes(gen: Generator, plans: list[Plan], count: int) -> Iterator[Probe]:
    """`count` requests: every plan's valid callbacks (1-3 each) among random wrong ones."""
    valid = [
        gen.valid(plan)
        for chance in (None, 0.7, 0.3)  # once each, a second time at 70%, a third at 30%
        for plan in plans
        if plan.kind != "untouched" and (chance is None or gen.rng.random() < chance)
    ]
    slots = sorted(gen.rng.sample(range(count), min(count, len(valid))))
    by_slot = dict(zip(slots, valid, strict=False))
    for index in range(count):
        yield by_slot.get(index) or gen.random()


# ---- sending ----------------------------------------------------------------------------------


async def send(port: int, probe: Probe) -> Answer:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if probe.pause_after:
            writer.write(probe.data[: probe.pause_after])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(probe.data[probe.pause_after :])
        else:
            writer.write(probe.data)
        await writer.drain()
        if HUNG_UP in probe.expect:
            return Answer(probe.name, HUNG_UP, time.perf_counter() - started)
        async with asyncio.timeout(ANSWER_WAIT):
            first = await reader.readline()
            seconds = time.perf_counter() - started
            while await reader.read(65536):
                pass
        parts = first.split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else CLOSED
        return Answer(probe.name, status, seconds)
    except (ConnectionError, TimeoutError):
        # A reset before the answer was read (the server answered and closed before reading
        # all we sent, say after a 413) counts as closed; the check decides if that is fine.
        return Answer(probe.name, CLOSED, time.perf_counter() - started)
    finally:
        writer.close()


async def time_until_closed(port: int, data: bytes) -> float:
    """Seconds until the server closes a connection on which `data` was sent and no more."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(ANSWER_WAIT):
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    except TimeoutError:
        return float("inf")
    finally:
        writer.close()
    return time.perf_counter() - started


# ---- the run ----------------------------------------------------------------------------------


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("simulators", "aiohttp.access")):
            return  # the fakes' own lines
        self.records.append(record)


def settings_for(telegram: FakeTelegram, coze: FakeCoze, workdir: Path) -> Settings:
    raw: dict[str, Any] = bot_settings(telegram, coze, workdir, callback_secret=SECRET)
    raw["server"].update(
        max_callback_bytes=MAX_BYTES,
        keepalive_timeout_seconds=KEEPALIVE,
        read_timeout_seconds=READ_TIMEOUT,
    )
    # Nothing but callbacks may change a task while the fuzz runs.
    raw["tasks"] = {"reconcile_after_seconds": 3600.0, "timeout_seconds": 3600.0}
    raw["coze"]["max_starts_per_second"] = 1000.0
    raw["limits"] = {
        "max_active_tasks_per_user": 0,
        "max_tasks_per_user_per_day": 0,
        "max_messages_per_user_per_minute": 0,
        "max_concurrent_runs": 0,
    }
    return Settings.model_validate(raw)


async def fuzz(*, seed: int, requests: int, concurrency: int = 16, tasks: int = 16) -> Report:
    report = Report(seed=seed, requests=requests, concurrency=concurrency)
    rng = random.Random(seed)
    recorder = LogRecorder()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir:
            async with FakeTelegram() as telegram, FakeCoze(callbacks_enabled=False) as coze:
                settings = settings_for(telegram, coze, Path(workdir))
                async with running_bot(settings) as bot:
                    await _fuzz_bot(bot.public_url, telegram, coze, rng, tasks, report, recorder)
    finally:
        root.removeHandler(recorder)
        root.setLevel(old_level)
    return report


async def _fuzz_bot(
    url: str,
    telegram: FakeTelegram,
    coze: FakeCoze,
    rng: random.Random,
    tasks: int,
    report: Report,
    recorder: LogRecorder,
) -> None:
    port = int(url.rsplit(":", 1)[1])
    run_ids = await _waiting_tasks(telegram, coze, tasks + 1)
    final_run, run_ids = run_ids[-1], run_ids[:-1]
    plans = make_plans(rng, run_ids)
    gen = Generator(rng, run_ids)
    before = {task.run_id: task for task in await Task.all()}

    slow = asyncio.gather(
        time_until_closed(port, b""),
        time_until_closed(port, b"POST " + CALLBACK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"),
        time_until_closed(port, http(b'{"task_id": "', length=200)),
    )
    queue = iter(probes(gen, plans, report.requests))

    async def worker() -> None:
        for probe in queue:
            answer = await send(port, probe)
            report.answers.append(answer)
            _check_answer(probe, answer, report)

    await asyncio.gather(*(worker() for _ in range(report.concurrency)))
    idle, headers, body = await slow
    report.notes.append(
        f"timeouts (set -> measured): keep-alive {KEEPALIVE:g}s -> idle closed after {idle:.2f}s;"
        f" read {READ_TIMEOUT:g}s -> half-sent headers closed after {headers:.2f}s,"
        f" half-sent body after {body:.2f}s"
    )
    for what, seconds, limit in (
        ("an idle connection", idle, KEEPALIVE),
        ("half-sent headers", headers, READ_TIMEOUT),
        ("a half-sent body", body, READ_TIMEOUT),
    ):
        if seconds > limit + 2.0:
            report.violate(f"{what} stayed open {seconds:.2f}s (limit {limit:g}s)")

    await _check_after(port, gen, final_run, report)
    await _check_database(plans, before, final_run, report)
    _check_log(recorder.records, gen, report)


async def _waiting_tasks(telegram: FakeTelegram, coze: FakeCoze, count: int) -> list[str]:
    """`count` users paste a link each; their runs start and wait for callbacks."""
    for n in range(count):
        telegram.user_sends(_FIRST_USER + n, f"https://v.douyin.com/fuzz-{n}/")
    deadline = time.monotonic() + 30
    while await Task.filter(state=TaskState.PROCESSING).count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the fuzz's tasks did not start")
        await asyncio.sleep(0.05)
    return [task.run_id for task in await Task.all().order_by("id")]


def _check_answer(probe: Probe, answer: Answer, report: Report) -> None:
    if answer.status >= 500:
        report.violate(f"{probe.name}: answered {answer.status}")
    elif answer.status not in probe.expect and not _reset_after_refusal(probe, answer):
        expected = "/".join(str(code) for code in sorted(probe.expect))
        report.violate(f"{probe.name}: answered {answer.status}, expected {expected}")


def _reset_after_refusal(probe: Probe, answer: Answer) -> bool:
    """A big body refused early may see the connection reset before the answer is read."""
    return answer.status == CLOSED and bool(probe.expect & {413, 415, 400})


async def _check_after(port: int, gen: Generator, final_run: str, report: Report) -> None:
    health = await send(port, Probe("healthz", http(method=b"GET", path=b"/healthz"), frozenset()))
    body = gen.encode(gen.body(final_run, text="the last words"))
    final = await send(port, Probe("final", http(body), frozenset()))
    report.notes.append(f"after: GET /healthz {health.status}, a valid callback {final.status}")
    if health.status != 200:
        report.violate(f"/healthz answered {health.status} after the fuzz")
    if final.status != 200:
        report.violate(f"a valid callback answered {final.status} after the fuzz")


async def _check_database(
    plans: list[Plan], before: dict[str, Task], final_run: str, report: Report
) -> None:
    after = {task.run_id: task for task in await Task.all()}
    if set(after) != set(before):
        report.violate(f"tasks changed: {len(before)} before, {len(after)} after")
    tally: Counter[str] = Counter()
    for plan in plans:
        task = after.get(plan.run_id)
        if task is None:
            continue
        problem = _differs(plan, task)
        if problem:
            report.violate(f"task {task.id} ({plan.kind}): {problem}")
        else:
            tally[plan.kind] += 1
    last = after.get(final_run)
    if last is None or last.state != TaskState.COMPLETED or last.result_text != "the last words":
        report.violate("the valid callback after the fuzz was not applied")
    report.notes.append(
        f"database: {len(after)} tasks as planned: {tally['success']} completed, "
        f"{tally['failed']} failed, {tally['progress']} with progress, "
        f"{tally['untouched']} untouched, and the last callback's task completed"
    )


def _differs(plan: Plan, task: Task) -> str:
    seen = (task.state, task.result_text, task.progress, task.callback_received)
    if plan.kind == "success":
        want: tuple[object, ...] = (TaskState.COMPLETED, plan.text, 100, True)
    elif plan.kind == "failed":
        want = (TaskState.FAILED, None, 0, True)
        if task.error_detail != plan.error:
            return f"error_detail {task.error_detail!r}, expected {plan.error!r}"
    elif plan.kind == "progress":
        want = (TaskState.PROCESSING, None, plan.progress, False)
    else:
        want = (TaskState.PROCESSING, None, 0, False)
    return "" if seen == want else f"(state, text, progress, callback) {seen!r}, expected {want!r}"


def _check_log(records: list[logging.LogRecord], gen: Generator, report: Report) -> None:
    tracebacks = leaks = broken = 0
    for record in records:
        message = record.getMessage()
        if record.exc_info or record.exc_text or "Traceback" in message:
            tracebacks += 1
        if gen.marker in message or any(t in gen.tokens for t in _HEX64.findall(message)):
            leaks += 1
        if _CONTROL.search(message):
            broken += 1
    levels = Counter(record.levelname for record in records)
    shown = ", ".join(f"{count} {level}" for level, count in sorted(levels.items()))
    report.notes.append(
        f"log: {len(records)} lines ({shown}); {tracebacks} with a traceback, "
        f"{leaks} with a request's token or bytes, {broken} with a control character"
    )
    if tracebacks:
        report.violate(f"{tracebacks} log record(s) with a traceback")
    if leaks:
        report.violate(f"{leaks} log record(s) quoting a request's token or bytes")
    if broken:
        report.violate(f"{broken} log record(s) with a control character")
    if len(records) > report.requests + 100:
        report.violate(f"{len(records)} log lines for {report.requests} requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.fuzz", description=__doc__)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    report = asyncio.run(fuzz(seed=args.seed, requests=args.requests, concurrency=args.concurrency))
    print(report.table())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

"""`make soak`: thousands of links through the real bot process, with faults and crashes.

``python -m simulators.soak [--tasks N] [--users U] [--seed S] [--kills K] [--rate R]
[--instances N] [--database-url URL] [--mode polling|webhook] [--telegram-rate T] [--keep]``

The fake Telegram and the fake Coze run in this process; the bot runs as subprocesses
(``python -m bot --config FILE``), as in the demo. Users paste links (one unique link per task,
``https://v.douyin.com/soak-<n>/``, one to three per message) spread over time, and every
fault comes from one ``random.Random(seed)``:

- workflow outcomes: short texts, texts of several messages, texts long enough for a document,
  failed runs, runs with no text, runs that outlast the deadline; lost, duplicated and late
  callbacks (a late one arrives after the deadline, its run history unreadable meanwhile);
- Coze refusing to start a run (mostly passing trouble, a few lasting refusals), run-history
  calls failing;
- Telegram answering 429 (retry_after 1) or 500, or holding a reply past the bot's request
  timeout (the message is stored: the bot must not send it again), and users blocking the bot;
- bot processes killed or stopped at random moments (below).

One instance (the default): polling, on an SQLite file in the work directory (or on a fresh
PostgreSQL database with ``--database-url``), killed with SIGKILL K times (``--kills``, default
3) and restarted each time on the same database and port; links pasted meanwhile wait in the
fake's getUpdates queue.

Several instances (``--instances N``, N >= 2, which needs ``--database-url postgres://...``): N bot
processes on one PostgreSQL database, in Telegram webhook mode (``--mode polling`` makes them
all poll instead), behind ``simulators.proxy``'s round-robin proxy: ``server.public_url``, the
webhook URL and so the Coze callback URL all point at it, so updates and callbacks are spread
across the instances; one that refuses connections (dead) is passed over. Each has its own
config file, differing only in its port. K instances (default 2, at most N-1) are taken down
mid-run, alternately with SIGKILL and SIGTERM, and do not come back: the others must finish
their work (runs, deliveries, updates stored and not handled).

The database: with ``--database-url`` (a PostgreSQL server, e.g.
``postgres://postgres@127.0.0.1:5432/test``) the soak creates a database of its own on that
server (``link2text_soak_<pid>_<random>``) and drops it at the end unless ``--keep``. The
migrations are applied once (``python -m bot migrate``) before any instance starts.

Telegram's limits: the instances share ``--telegram-rate`` T (default 300) requests a second:
each is configured with ``telegram.max_requests_per_second`` = T,
``delivery.max_messages_per_second`` = T/2 and ``cluster.instances`` = N, so it sends its share,
1/N of those. (Each also gets ``cluster.instance_id`` = soak-botK and ``cluster.lease_seconds``
= 5, the soak's compressed time.) The fake answers 429 past T a second, as Telegram does past
its bot-wide limit: a leaky bucket of T a second holding T x 1.25 calls that carry a chat_id
(the calls the bot's limiter counts), answered with retry_after 2 where an injected 429 says 1;
per-chat limits are not modelled. Any such 429 (one not injected by the fault plan) fails the
soak. Each instance's Telegram and Coze API base URLs are one-upstream proxies in front of the
fakes (taps), so the soak knows which instance made each call.

At the end it waits until everything has settled (or a generous deadline), scrapes /metrics,
stops the instances with SIGTERM, reads the database (sqlite3 or asyncpg) and prints a tally of
what each user received. Exit status 1 when a task is stuck (pending/processing), lost (nothing
reached its user, who had not blocked the bot), or reached its user twice unexplained; when a
link became two tasks, an attempt's run was started at Coze twice, or a message was
acknowledged twice, unexplained; when an instance exits with non-zero on SIGTERM or by itself;
when Telegram answered a 429 that was not injected; or when /metrics disagrees with the soak's
own count. A second copy of a message is explained only by a flag in the database that fits what
the taps saw: ``send_timed_out`` with the first copy's reply held past the bot's timeout, or
``resent_after_crash`` with the first copy's sender killed or stopped before the second was
sent. A second start or acknowledgement is explained only when the instance that did it first
was killed or stopped before it was done again.

/metrics: each instance is scraped just before it is killed or stopped and once more at the
end; the figures of each run of a process (a "life") are summed and compared:

- callbacks by answer, and updates received: per life, between what the proxy (or, polling,
  the tap's getUpdates) shows had been answered before the scrape began and what had been sent
  before it ended (the same figure once everything has settled);
- Coze calls (all, successful starts, run history) against the fake Coze's count, and
  deliveries marked delivered against the distinct outcomes that reached their users (less, at
  the low end, timeout notices overtaken by a late text, whose mark the text may win): equal
  when no life was cut short (killed, or stopped mid-run: what it did after its last scrape is
  lost with it), otherwise at most the soak's count. Deliveries undeliverable or failed have no
  exact counterpart outside the bot and are not compared;
- tasks by state and the outbox backlog (read from the database when scraped): equal to the
  soak's reading of the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.config import SECRET_ENV
from simulators.coze import FAIL_ERROR_CODE, CozeFault, FakeCoze, FakeRun, WorkflowOutcome
from simulators.proxy import Forwarded, RoundRobinProxy
from simulators.settings import Sections, bot_settings, to_toml
from simulators.telegram import FakeTelegram, SentMessage, TelegramDelay, TelegramFault

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 20240611
DATABASE_NAME = "soak.sqlite3"
LINK_PREFIX = "https://v.douyin.com/soak-"
_MARKER = re.compile(r"soak-(\d+)/")
_NOTICE = re.compile(r"^Task #\d+ failed: ")
_FIRST_USER = 50_001
STOP_GRACE = 15.0  # seconds the bot may take to stop on SIGTERM
CALLBACK_PATH = "/webhook/coze"
TELEGRAM_PATH = "/webhook/telegram"
POSTGRES_SCHEMES = ("postgres", "postgresql", "asyncpg")

# Methods whose Telegram calls may get a random fault (the bot's sends and edits).
_FAULTY_METHODS = frozenset(
    {"sendmessage", "senddocument", "editmessagetext", "editmessagereplymarkup"}
)
# How the bot's acknowledgement of a message begins (users have no language: English).
ACK_PREFIX = "Got it! Task"
# The retry_after of a 429 past Telegram's limit (an injected one asks for 1 s).
LIMIT_RETRY_AFTER = 2
# Methods whose answer is a new message of the bot's (the taps note which instance sent it).
_SENDING_METHODS = frozenset({"sendmessage", "senddocument"})

_ZH = (
    "大家好，欢迎来到今天的视频。",
    "今天我们来聊一聊如何在家做一道简单的番茄炒蛋。",
    "首先把鸡蛋打散，加入少许盐。",
    "这个方法我已经用了很多年，效果一直很好。",
    "接下来我们看一下具体的操作步骤。",
    "注意火候不要太大，否则很容易糊锅。",
    "最后撒上葱花，一道美味的家常菜就完成了。",
)
_EN = (
    "Hi everyone, welcome back to the channel.",
    "The first step is simpler than it looks.",
    "Keep an eye on the timing, it matters more than the ingredients.",
    "Here is the trick that saved me a lot of trouble.",
    "That's all for today, see you in the next one.",
)


class SoakSetupError(Exception):
    """The soak cannot run as asked (the message says why, in one line)."""


# --------------------------------------------------------------------------------------------
# Options and the plan (every random choice, made up front from the seed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakOptions:
    tasks: int = 2000
    users: int | None = None  # default: one user per 25 tasks, at least 5
    seed: int = DEFAULT_SEED
    kills: int | None = None  # default: 3 with one instance, else min(2, instances - 1)
    links_per_second: float = 20.0  # how fast users paste, on average
    timeout_seconds: float = 16.0  # tasks.timeout_seconds
    reconcile_after_seconds: float = 1.5
    request_timeout_seconds: float = 2.0  # telegram.request_timeout_seconds
    settle_deadline_seconds: float = 240.0  # after the last paste and the last restart
    verbose: bool = True  # progress lines on stdout
    keep_workdir: bool = False  # keep the database (and the log) even when the soak passes
    instances: int = 1
    database_url: str | None = None  # a PostgreSQL server; None: an SQLite file
    mode: str | None = None  # "polling" or "webhook"; default: polling for one instance
    telegram_rate: float = 300.0  # requests a second the instances share (Telegram's limit)
    lease_seconds: float = 5.0  # cluster.lease_seconds (several instances)

    @property
    def user_count(self) -> int:
        return self.users if self.users is not None else max(5, self.tasks // 25)

    @property
    def kill_count(self) -> int:
        if self.kills is not None:
            return self.kills
        return 3 if self.instances == 1 else min(2, self.instances - 1)

    @property
    def webhook(self) -> bool:
        return self.mode == "webhook" or (self.mode is None and self.instances > 1)

    def problem(self) -> str | None:
        """Why these options cannot make a soak, or None."""
        if self.instances < 1:
            return "--instances: at least 1"
        if self.mode not in (None, "polling", "webhook"):
            return "--mode: polling or webhook"
        if self.database_url is not None and urlsplit(self.database_url).scheme not in (
            POSTGRES_SCHEMES
        ):
            return "--database-url: a PostgreSQL URL (postgres://user@host:port/db)"
        if self.instances > 1 and self.database_url is None:
            return "--instances above 1 needs --database-url (a PostgreSQL server)"
        if self.kill_count < 0:
            return "--kills: 0 or more"
        if self.instances > 1 and self.kill_count > self.instances - 1:
            return f"--kills: at most {self.instances - 1} with {self.instances} instances"
        if self.telegram_rate <= 0:
            return "--telegram-rate: above 0"
        return None


@dataclass(frozen=True)
class LinkPlan:
    n: int
    kind: str  # short | medium | long | fail | empty
    outcome: WorkflowOutcome
    start_faults: tuple[CozeFault, ...]  # answered to the first start calls of this link
    late_callback: bool  # the callback comes after the deadline (history unreadable till then)
    overdue_run: bool  # the run itself outlasts the deadline

    @property
    def has_text(self) -> bool:
        return self.kind in ("short", "medium", "long")


@dataclass(frozen=True)
class Paste:
    at: float  # seconds after the start
    user: int
    links: tuple[int, ...]


@dataclass(frozen=True)
class Kill:
    at: float  # seconds after the start
    down: float  # seconds before the restart (one instance; several never come back)
    instance: int  # 1-based
    signal: str  # "SIGKILL" or "SIGTERM"


@dataclass
class Plan:
    links: dict[int, LinkPlan]
    pastes: list[Paste]
    blocks: dict[int, float]  # user -> when they block the bot
    kills: list[Kill]
    send_period: float


def link(n: int) -> str:
    return f"{LINK_PREFIX}{n}/"


def link_number(url: str) -> int | None:
    match = _MARKER.search(url)
    return int(match.group(1)) if match else None


def _paragraph(rng: random.Random, n: int, index: int, size: int) -> str:
    words = [f"[soak-{n}/ {index}]"]
    total = len(words[0])
    while total < size:
        sentence = rng.choice(_ZH) if rng.random() < 0.6 else rng.choice(_EN)
        words.append(sentence)
        total += len(sentence) + 1
    return " ".join(words)


def _text(rng: random.Random, n: int, total: int, paragraph: tuple[int, int]) -> str:
    """About `total` characters in paragraphs of `paragraph` characters, each naming the link."""
    paragraphs: list[str] = []
    size = 0
    while size < total or not paragraphs:
        para = _paragraph(rng, n, len(paragraphs) + 1, rng.randint(*paragraph))
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs)


def _start_faults(rng: random.Random, attempts: int) -> tuple[CozeFault, ...]:
    roll = rng.random()
    if roll < 0.004:  # a lasting refusal: the task fails at once
        return (rng.choice((CozeFault(4011, "quota exceeded"), CozeFault(4200, "not published"))),)
    if roll < 0.007:  # passing trouble that does not pass: tries exhausted
        return tuple(CozeFault(4013, "request too frequent") for _ in range(attempts))
    if roll < 0.08:
        transient = (
            CozeFault(4013, "request too frequent"),
            CozeFault(5000, "internal error"),
            CozeFault(4009, "server busy"),
            CozeFault(0, "Bad Gateway", http_status=502),
            CozeFault(0, "Too Many Requests", http_status=429),
            CozeFault(0, "", drop_connection=True),
        )
        return tuple(rng.choice(transient) for _ in range(rng.randint(1, attempts - 1)))
    return ()


def _link_plan(rng: random.Random, n: int, options: SoakOptions, attempts: int) -> LinkPlan:
    timeout = options.timeout_seconds
    roll = rng.random()
    if roll < 0.72:
        kind, text = "short", _text(rng, n, rng.randint(80, 1200), (60, 400))
    elif roll < 0.80:
        kind, text = "medium", _text(rng, n, rng.randint(5000, 9500), (300, 700))
    elif roll < 0.84:
        kind, text = "long", _text(rng, n, rng.randint(14_000, 24_000), (300, 900))
    elif roll < 0.94:
        kind, text = "fail", ""
    else:
        kind, text = "empty", ""
    roll = rng.random()
    overdue_run = roll < 0.03
    if overdue_run:
        duration = timeout + rng.uniform(1.0, 4.0)
    elif roll < 0.18:
        duration = rng.uniform(1.5, 5.0)
    else:
        duration = rng.uniform(0.05, 1.5)
    lose = rng.random() < 0.08
    late_callback = not lose and not overdue_run and rng.random() < 0.02
    if late_callback:
        delay = timeout + rng.uniform(1.0, 3.0)
    elif rng.random() < 0.05:
        delay = rng.uniform(0.5, 4.0)  # races the reconciler
    else:
        delay = 0.0
    duplicates = rng.randint(1, 2) if rng.random() < 0.10 else 0
    outcome = WorkflowOutcome(
        status="Fail" if kind == "fail" else "Success",
        text=text,
        error_code=FAIL_ERROR_CODE if kind == "fail" else 0,
        error_message="video unavailable" if kind == "fail" else "",
        duration=duration,
        callback="lose" if lose else "send",
        callback_delay=delay,
        duplicates=duplicates,
    )
    return LinkPlan(
        n=n,
        kind=kind,
        outcome=outcome,
        start_faults=_start_faults(rng, attempts),
        late_callback=late_callback,
        overdue_run=overdue_run,
    )


def make_plan(options: SoakOptions, rng: random.Random, start_attempts: int) -> Plan:
    users = [_FIRST_USER + i for i in range(options.user_count)]
    send_period = options.tasks / options.links_per_second
    blocked = rng.sample(users, max(1, len(users) // 25)) if len(users) > 1 else []
    blocks = {user: rng.uniform(0.3, 0.9) * send_period for user in blocked}
    pastes: list[Paste] = []
    n = 0
    at = 0.5
    while n < options.tasks:
        count = min(options.tasks - n, rng.choices((1, 2, 3), weights=(70, 20, 10))[0])
        active = [user for user in users if blocks.get(user, float("inf")) > at]
        pastes.append(Paste(at, rng.choice(active), tuple(range(n + 1, n + count + 1))))
        n += count
        at += rng.expovariate(options.links_per_second / count)
    links = {k: _link_plan(rng, k, options, start_attempts) for k in range(1, options.tasks + 1)}
    return Plan(
        links=links, pastes=pastes, blocks=blocks, kills=_kills(options, rng, at), send_period=at
    )


def _kills(options: SoakOptions, rng: random.Random, send_period: float) -> list[Kill]:
    count = options.kill_count
    kills: list[Kill] = []
    if not count:
        return kills
    window = max(send_period, 3.0 * count)
    if options.instances == 1:
        # SIGKILL, then a restart on the same database and port.
        moments = sorted(rng.uniform(0.1, 1.1) * window for _ in range(count))
        earliest = 0.0
        for moment in moments:
            down = rng.uniform(0.3, 3.0)
            moment = max(moment, earliest)
            kills.append(Kill(moment, down, 1, "SIGKILL"))
            earliest = moment + down + 3.0  # let the restarted bot get going first
        return kills
    # Several: distinct instances taken down for good while users are still pasting,
    # alternately SIGKILL and SIGTERM.
    moments = sorted(rng.uniform(0.15, 0.75) * window for _ in range(count))
    victims = rng.sample(range(1, options.instances + 1), count)
    earliest = 0.0
    for k, (moment, victim) in enumerate(zip(moments, victims, strict=True)):
        moment = max(moment, earliest)
        kills.append(Kill(moment, 0.0, victim, "SIGKILL" if k % 2 == 0 else "SIGTERM"))
        earliest = moment + 3.0
    return kills


# --------------------------------------------------------------------------------------------
# The bot process
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bot_environment() -> dict[str, str]:
    # Secrets in the environment would override the config file: never hand real ones over.
    env = {name: value for name, value in os.environ.items() if name not in SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class BotProcess:
    """`python -m bot --config FILE` as a subprocess; all its runs append to one log file."""

    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        module: str = "bot",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.module = module  # the benchmark runs the bot through simulators.counted_bot
        self.environment = environment or {}
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self.unexpected_exits: list[int] = []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        assert not self.running, "the bot is already running"
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"==== soak: bot start #{self.starts} ====\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                "--config",
                str(self.config),
                cwd=PROJECT_ROOT,
                env=bot_environment() | self.environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def check(self) -> bool:
        """True (and the exit noted) when the bot exited though nobody asked it to (a crash)."""
        process = self.process
        if process is not None and process.returncode is not None:
            self.unexpected_exits.append(process.returncode)
            self.process = None
            return True
        return False

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as when the machine loses power."""
        self.check()
        process = self.process
        if process is None:
            return  # it had exited by itself (noted by `check`)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()
        self.kills += 1
        self.process = None

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM; the exit code, or None when it had to be killed after `grace` seconds."""
        process = self.process
        if process is None:
            return None
        self.process = None
        if process.returncode is not None:
            self.unexpected_exits.append(process.returncode)
            return process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(grace):
                return await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return None

    def force_kill(self) -> None:
        """Last resort, outside the event loop: SIGKILL without waiting."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> list[str]:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


def write_config(path: Path, sections: Sections) -> None:
    path.write_text(to_toml(sections), encoding="utf-8")


def soak_sections(
    telegram: FakeTelegram,
    coze: FakeCoze,
    workdir: Path,
    *,
    port: int,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Sections:
    """The bot's settings for these simulators on a fixed port (kept across restarts)."""
    sections = bot_settings(
        telegram,
        coze,
        workdir,
        callback_secret="soak-callback-secret-" + os.urandom(8).hex(),
        database_name=DATABASE_NAME,
    )
    sections["server"]["port"] = port
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    return sections


async def migrate(config: Path, log: Path, timeout: float = 120.0) -> None:
    """`python -m bot migrate --config FILE`, once, before any instance starts."""
    with log.open("ab") as out:
        out.write(b"==== soak: python -m bot migrate ====\n")
        out.flush()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "migrate",
            "--config",
            str(config),
            cwd=PROJECT_ROOT,
            env=bot_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        try:
            async with asyncio.timeout(timeout):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SoakSetupError(f"python -m bot migrate took over {timeout:.0f} s") from None
    if code != 0:
        raise SoakSetupError(f"python -m bot migrate failed (exit {code}; see {log})")


# --------------------------------------------------------------------------------------------
# The database: an SQLite file read with sqlite3, or a PostgreSQL database read with asyncpg
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    id: int
    input_url: str
    chat_id: int
    state: str
    notification_sent: bool
    undeliverable: bool
    send_timed_out: bool
    resent_after_crash: bool
    delivery_attempts: int
    retry_count: int


_TASKS_QUERY = (
    "SELECT id, input_url, chat_id, state, notification_sent, undeliverable, "
    "send_timed_out, resent_after_crash, delivery_attempts, retry_count "
    "FROM tasks ORDER BY id"
)


def _task_row(row: Sequence[Any]) -> TaskRow:
    return TaskRow(
        id=int(row[0]),
        input_url=str(row[1]),
        chat_id=int(row[2]),
        state=str(row[3]),
        notification_sent=bool(row[4]),
        undeliverable=bool(row[5]),
        send_timed_out=bool(row[6]),
        resent_after_crash=bool(row[7]),
        delivery_attempts=int(row[8]),
        retry_count=int(row[9]),
    )


def read_tasks(database: Path) -> list[TaskRow]:
    """Every row of `tasks` in an SQLite file (empty when it does not exist yet)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        try:
            rows = db.execute(_TASKS_QUERY).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the first start has not migrated yet
            raise
    return [_task_row(row) for row in rows]


class SoakDatabase(Protocol):
    url: str  # for the bot's [storage] database_url

    @property
    def description(self) -> str: ...

    async def create(self) -> None: ...

    async def read_tasks(self) -> list[TaskRow]: ...

    async def drop(self) -> None: ...


class SqliteDatabase:
    """A file in the work directory (removed with it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite://{path}"

    @property
    def description(self) -> str:
        return f"SQLite {self.path}"

    async def create(self) -> None:
        pass

    async def read_tasks(self) -> list[TaskRow]:
        return await asyncio.to_thread(read_tasks, self.path)

    async def drop(self) -> None:
        pass


def _with_database(url: str, scheme: str, name: str, *, query: bool) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, "/" + name, parts.query if query else "", ""))


async def _pg_connect(dsn: str) -> Any:
    import asyncpg  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return await asyncpg.connect(dsn, timeout=10)


async def read_postgres_tasks(dsn: str) -> list[TaskRow]:
    """Every row of `tasks` in a PostgreSQL database (empty before it is migrated); `dsn` is a
    postgresql:// URL."""
    import asyncpg

    connection = await _pg_connect(dsn)
    try:
        rows = await connection.fetch(_TASKS_QUERY)
    except asyncpg.UndefinedTableError:
        return []  # not migrated yet
    finally:
        await connection.close()
    return [_task_row(tuple(row)) for row in rows]


class PostgresDatabase:
    """A database of the soak's own on the server of `server_url`, created and dropped here."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self.server = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        self.name = f"link2text_soak_{os.getpid()}_{os.urandom(3).hex()}"
        self._admin = _with_database(
            server_url, "postgresql", parts.path.lstrip("/") or "postgres", query=False
        )
        self._dsn = _with_database(server_url, "postgresql", self.name, query=False)
        self.url = _with_database(server_url, "postgres", self.name, query=True)
        self.created = False

    @property
    def description(self) -> str:
        return f"PostgreSQL {self.server}/{self.name}"

    async def create(self) -> None:
        try:
            connection = await _pg_connect(self._admin)
        except (OSError, TimeoutError) as exc:
            raise SoakSetupError(f"cannot reach PostgreSQL at {self.server} ({exc})") from None
        except Exception as exc:
            raise SoakSetupError(
                f"PostgreSQL at {self.server} refused the connection ({type(exc).__name__}: {exc})"
            ) from None
        try:
            await connection.execute(f'CREATE DATABASE "{self.name}"')
            self.created = True
        finally:
            await connection.close()

    async def read_tasks(self) -> list[TaskRow]:
        return await read_postgres_tasks(self._dsn)

    async def drop(self) -> None:
        if not self.created:
            return
        connection = await _pg_connect(self._admin)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False
        finally:
            await connection.close()


OPEN_STATES = ("pending", "processing")


def outstanding(rows: list[TaskRow]) -> int:
    """Tasks not settled yet: still running, or an outcome not yet sent nor given up."""
    return sum(
        row.state in OPEN_STATES or not (row.notification_sent or row.undeliverable) for row in rows
    )


# --------------------------------------------------------------------------------------------
# Instances, their lives, and /metrics
# --------------------------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One GET /metrics: when it began and ended (time.monotonic()), and its samples."""

    began: float
    ended: float
    samples: dict[str, dict[Labels, float]]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value summed over the label sets that include `labels`."""
        wanted = set(labels.items())
        return sum(
            value
            for label_set, value in self.samples.get(name, {}).items()
            if wanted <= set(label_set)
        )

    def labels(self, name: str, label: str) -> set[str]:
        return {
            dict(label_set)[label]
            for label_set in self.samples.get(name, {})
            if label in dict(label_set)
        }


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = float(sample.value)
    return samples


async def scrape_metrics(port: int, timeout: float = 5.0) -> Scrape | None:
    """GET /metrics from one instance directly (not through the proxy); None if it fails."""
    began = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
            if response.status != 200:
                return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    return Scrape(began, time.monotonic(), parse_metrics(text))


@dataclass
class Life:
    """One run of an instance's process, from its start to its end."""

    instance: int
    started: float  # time.monotonic(), just before the process was started
    ended: float | None = None
    end: str = ""  # how it ended
    exit_code: int | None = None
    scrape: Scrape | None = None  # the last one, taken before the end

    @property
    def cut(self) -> bool:
        """Ended before everything settled: what it did after its last scrape is lost."""
        return self.end != "stopped at the end" or self.scrape is None

    def covers(self, moment: float) -> bool:
        return self.started <= moment and (self.ended is None or moment <= self.ended)


class Instance:
    """One bot instance: its process, port and config, its tap in front of Telegram, its lives."""

    def __init__(self, index: int, workdir: Path, *, single: bool) -> None:
        suffix = "" if single else f"-{index}"
        self.index = index
        self.name = "bot" if single else f"bot{index}"
        self.port = free_port()
        self.process = BotProcess(workdir / f"config{suffix}.toml", workdir / f"bot{suffix}.log")
        self.lives: list[Life] = []
        self.down = False  # stopped for a while (one instance: restarted after a kill)
        self.retired = False  # taken down for good (several instances)

    @property
    def life(self) -> Life | None:
        """The life under way, if any."""
        if self.lives and self.lives[-1].ended is None:
            return self.lives[-1]
        return None

    def life_at(self, moment: float) -> Life | None:
        return next((life for life in self.lives if life.covers(moment)), None)


@dataclass(frozen=True)
class Seen:
    """Something done once per key (a run started, a message acknowledged), by an instance."""

    key: str
    instance: int
    at: float  # time.monotonic() when its call reached the tap


@dataclass(frozen=True)
class Sender:
    """Which instance sent one of the bot's messages, as its tap saw it."""

    instance: int
    at: float  # when the call reached the tap (seconds into the plan)
    seconds: float  # how long the call took
    life_ended: float | None  # when the sending life ended


class TelegramLimit:
    """Telegram's bot-wide limit as the fake applies it: a leaky bucket of `rate` calls a
    second holding `rate` x (1 + `tolerance`) calls, the bucket the instances' limiters make
    together (each a bucket of rate/N holding rate/N calls), plus room for the jitter between
    a limiter letting a call through and the call reaching the fake."""

    def __init__(self, rate: float, tolerance: float = 0.25) -> None:
        self.rate = rate
        self.capacity = rate * (1.0 + tolerance)
        self.refused = 0  # 429s answered by this limit (not injected)
        self.peak = 0.0
        self._level = 0.0
        self._at = time.monotonic()

    def admit(self) -> bool:
        moment = time.monotonic()
        self._level = max(0.0, self._level - (moment - self._at) * self.rate)
        self._at = moment
        if self._level + 1.0 > self.capacity:
            self.refused += 1
            return False
        self._level += 1.0
        self.peak = max(self.peak, self._level)
        return True


# --------------------------------------------------------------------------------------------
# The tally
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    """What one link's user received from the bot about it."""

    texts: list[str] = field(default_factory=list)  # text pieces, document contents
    notices: list[str] = field(default_factory=list)  # failure and timeout notices
    # Each distinct message (text, document) and the ids of its copies, in send order.
    copies: dict[tuple[str, bytes | None], list[int]] = field(default_factory=dict)


def received_by_link(telegram: FakeTelegram, users: list[int]) -> dict[int, Received]:
    found: dict[int, Received] = {}
    for user in users:
        for message in telegram.messages(user):
            _attribute(message, found)
    return found


def _attribute(message: SentMessage, found: dict[int, Received]) -> None:
    text = message.text or ""
    content = message.document.decode("utf-8", "replace") if message.document else ""
    match = _MARKER.search(text) or _MARKER.search(content)
    if match is None:
        return  # an acknowledgement, or an answer to something else
    got = found.setdefault(int(match.group(1)), Received())
    got.copies.setdefault((text, message.document), []).append(message.message_id)
    if message.document is not None:
        got.texts.append(content)
    elif _NOTICE.match(text):
        got.notices.append(text)
    else:
        got.texts.append(text)


def text_complete(plan: LinkPlan, got: Received | None) -> bool:
    """Every paragraph of the workflow's text reached the user."""
    if got is None or not got.texts or not plan.has_text:
        return False
    seen = "\n\n".join(got.texts)
    return all(paragraph.strip() in seen for paragraph in plan.outcome.text.split("\n\n"))


def outcomes_received(plan: LinkPlan, got: Received | None) -> int:
    """Distinct outcomes of this link that reached its user: the whole text, each notice."""
    if got is None:
        return 0
    return int(text_complete(plan, got)) + len(set(got.notices))


def _accepted_success(runs: list[FakeRun]) -> bool:
    """A final success callback of one of these runs was answered 200 by the bot."""
    for run in runs:
        for body, status in zip(run.callbacks_sent, run.callback_replies, strict=False):
            if body.get("status") == "success" and status == 200:
                return True
    return False


@dataclass(frozen=True)
class MetricCheck:
    """One /metrics figure (summed over lives) against the soak's own count."""

    name: str
    metric: float
    low: float
    high: float
    how: str  # "exact", "bracket" or "at most"

    @property
    def ok(self) -> bool:
        return self.low - 1e-9 <= self.metric <= self.high + 1e-9


@dataclass
class InstanceFigures:
    name: str
    lives: int
    ends: list[str]  # how each life ended
    callbacks: int  # answered through the proxy
    updates: int  # webhook requests answered, or updates polled
    messages: int  # sendMessage and sendDocument answered (its tap)
    refused: int  # connections the proxy found refused
    limited: int  # 429s past Telegram's limit (not injected)


@dataclass
class Tally:
    tasks: int = 0
    stored: int = 0  # rows in the tasks table
    delivered: int = 0
    reported: int = 0
    timeout_notices: int = 0
    text_after_timeout: int = 0
    undeliverable: int = 0
    duplicates_explained: int = 0
    duplicates_unexplained: int = 0
    stuck: int = 0
    lost: int = 0
    never_stored: int = 0  # links with no task at all (counted in lost too)
    extra_tasks: int = 0  # links that became more than one task
    dropped_texts: int = 0  # a success callback accepted, yet the text never reached the user
    flagged_send_timed_out: int = 0
    flagged_resent_after_crash: int = 0
    delivery_attempts: int = 0
    max_delivery_attempts: int = 0
    retries: int = 0
    outcomes_received: int = 0  # distinct outcomes that reached their users
    runs_twice_explained: int = 0  # an attempt started at Coze twice, the first starter gone
    runs_twice_unexplained: int = 0
    acks_twice_explained: int = 0  # a message acknowledged twice, the first sender gone
    acks_twice_unexplained: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0  # SIGKILLs
    terms: int = 0  # SIGTERMs mid-run
    unexpected_exits: list[int] = field(default_factory=list)
    exit_code: int | None = None  # on SIGTERM: 0 when every stop exited 0, else the first other
    exit_codes: list[tuple[str, int | None]] = field(default_factory=list)  # every SIGTERM
    settled: bool = False
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)  # one line per bad link, for the report
    workdir: str = ""
    instances: list[InstanceFigures] = field(default_factory=list)
    mode: str = "polling"
    database: str = ""
    database_note: str = ""
    metric_checks: list[MetricCheck] = field(default_factory=list)
    lives: int = 0
    lives_cut: int = 0
    limit_429: int = 0  # 429s past Telegram's limit (not injected)
    limit_peak: float = 0.0
    limit_capacity: float = 0.0
    setup_error: str = ""

    @property
    def metrics_ok(self) -> bool:
        return all(check.ok for check in self.metric_checks)

    @property
    def ok(self) -> bool:
        return (
            not self.setup_error
            and self.stuck == 0
            and self.lost == 0
            and self.duplicates_unexplained == 0
            and self.extra_tasks == 0
            and self.runs_twice_unexplained == 0
            and self.acks_twice_unexplained == 0
            and self.dropped_texts == 0
            and self.exit_code == 0
            and all(code == 0 for _, code in self.exit_codes)
            and not self.unexpected_exits
            and self.limit_429 == 0
            and self.metrics_ok
        )


def make_tally(
    plan: Plan,
    rows: list[TaskRow],
    received: dict[int, Received],
    coze: FakeCoze,
    senders: dict[int, Sender] | None = None,
    request_timeout: float = math.inf,
) -> Tally:
    """`senders` (message id -> who sent it) lets a duplicate be checked against what the
    taps saw; `request_timeout` is the bot's Telegram request timeout."""
    tally = Tally(tasks=len(plan.links), stored=len(rows))
    by_link: dict[int, list[TaskRow]] = {}
    for row in rows:
        number = link_number(row.input_url)
        if number is not None:
            by_link.setdefault(number, []).append(row)
    runs_by_link: dict[int, list[FakeRun]] = {}
    for run in coze.runs.values():
        number = link_number(str(run.parameters.get(coze.url_parameter, "")))
        if number is not None:
            runs_by_link.setdefault(number, []).append(run)
    user_of = {n: paste.user for paste in plan.pastes for n in paste.links}

    tally.stuck = sum(row.state in OPEN_STATES for row in rows)
    tally.flagged_send_timed_out = sum(row.send_timed_out for row in rows)
    tally.flagged_resent_after_crash = sum(row.resent_after_crash for row in rows)
    tally.delivery_attempts = sum(row.delivery_attempts for row in rows)
    tally.max_delivery_attempts = max((row.delivery_attempts for row in rows), default=0)
    tally.retries = sum(row.retry_count for row in rows)
    for row in rows:
        if row.state in OPEN_STATES:
            tally.problems.append(f"stuck: task #{row.id} ({row.input_url}) is {row.state}")

    for n, link_plan in plan.links.items():
        tasks = by_link.get(n, [])
        got = received.get(n)
        blocked = user_of[n] in plan.blocks
        tally.outcomes_received += outcomes_received(link_plan, got)
        if len(tasks) > 1:
            tally.extra_tasks += 1
            tally.problems.append(
                f"link {n}: {len(tasks)} tasks ({', '.join(f'#{t.id}' for t in tasks)})"
            )
        complete = text_complete(link_plan, got)
        timeout_notice = got is not None and any("took too long" in t for t in got.notices)
        tally.timeout_notices += timeout_notice
        if complete:
            tally.delivered += 1
            tally.text_after_timeout += timeout_notice
        elif got is not None and got.notices:
            tally.reported += 1
        elif blocked and tasks and all(t.undeliverable or t.send_timed_out for t in tasks):
            # A send to a user who blocked the bot can time out too (the 403 came too late):
            # the bot rightly records it as possibly delivered.
            tally.undeliverable += 1
        else:
            tally.lost += 1
            tally.never_stored += not tasks
            tally.problems.append(f"lost: link {n} ({link_plan.kind}): {_describe(tasks, got)}")
        if (
            link_plan.has_text
            and not complete
            and not blocked
            and _accepted_success(runs_by_link.get(n, []))
        ):
            tally.dropped_texts += 1
            tally.problems.append(
                f"text dropped: link {n} ({link_plan.kind}): its success callback was "
                f"accepted, the text never reached the user: {_describe(tasks, got)}"
            )
        repeated = [ids for ids in (got.copies.values() if got else ()) if len(ids) > 1]
        if repeated:
            if _explained(tasks, repeated, senders or {}, request_timeout):
                tally.duplicates_explained += 1
            else:
                tally.duplicates_unexplained += 1
                tally.problems.append(
                    f"unexplained duplicate: link {n} ({link_plan.kind}): "
                    f"{_describe(tasks, got)}; {_copies(repeated, senders or {})}"
                )
    return tally


def _explained(
    tasks: list[TaskRow],
    repeated: list[list[int]],
    senders: dict[int, Sender],
    request_timeout: float,
) -> bool:
    """Each later copy is accounted for by a flag of the task and what the taps saw: the copy
    before it was a send the bot gave up waiting for (send_timed_out), or its sender was gone
    (killed or stopped) before the later copy was sent (resent_after_crash). A copy no tap saw
    is accounted for by the flag alone."""
    timed_out = any(task.send_timed_out for task in tasks)
    resent = any(task.resent_after_crash for task in tasks)
    for ids in repeated:
        for earlier, later in pairwise(sorted(ids)):
            first, second = senders.get(earlier), senders.get(later)
            if first is None or second is None:
                if timed_out or resent:
                    continue
                return False
            if timed_out and first.seconds >= request_timeout:
                continue
            if resent and first.life_ended is not None and first.life_ended <= second.at:
                continue
            return False
    return True


def _copies(repeated: list[list[int]], senders: dict[int, Sender]) -> str:
    parts = []
    for ids in repeated:
        seen = []
        for message_id in sorted(ids):
            sender = senders.get(message_id)
            seen.append(
                f"#{message_id} by bot{sender.instance} at {sender.at:.1f}"
                if sender
                else f"#{message_id} (not seen by a tap)"
            )
        parts.append(", ".join(seen))
    return "copies: " + "; ".join(parts)


def _describe(tasks: list[TaskRow], got: Received | None) -> str:
    if not tasks:
        db = "no task stored"
    else:
        db = "; ".join(
            f"#{t.id} {t.state} sent={int(t.notification_sent)} "
            f"undeliverable={int(t.undeliverable)} timed_out={int(t.send_timed_out)} "
            f"resent={int(t.resent_after_crash)} attempts={t.delivery_attempts}"
            for t in tasks
        )
    if got is None:
        seen = "the user has nothing"
    else:
        copies = max((len(ids) for ids in got.copies.values()), default=0)
        seen = f"the user has {len(got.texts)} text piece(s), {len(got.notices)} notice(s)"
        if copies > 1:
            seen += f", one message {copies} times"
    return f"{db}; {seen}"


def _figure(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def format_tally(tally: Tally, options: SoakOptions) -> str:
    rows = [
        ("tasks", tally.tasks, f"{tally.stored} stored"),
        (
            "delivered (text reached the user)",
            tally.delivered,
            f"{tally.text_after_timeout} after a timeout notice",
        ),
        (
            "failed and reported (notice, no text)",
            tally.reported,
            f"{tally.timeout_notices} timeout notices in all",
        ),
        ("undeliverable (user blocked the bot)", tally.undeliverable, ""),
        (
            "duplicates, explained",
            tally.duplicates_explained,
            "flagged send_timed_out or resent_after_crash, as the taps saw it",
        ),
        ("duplicates, unexplained", tally.duplicates_unexplained, "must be 0"),
        ("stuck (pending/processing)", tally.stuck, "must be 0"),
        (
            "lost (nothing reached the user)",
            tally.lost,
            f"must be 0; {tally.never_stored} never stored",
        ),
        ("texts dropped (callback accepted)", tally.dropped_texts, "must be 0"),
        ("links that became 2+ tasks", tally.extra_tasks, "must be 0"),
        (
            "runs started twice, explained",
            tally.runs_twice_explained,
            "one attempt's run id, its first starter gone first",
        ),
        ("runs started twice, unexplained", tally.runs_twice_unexplained, "must be 0"),
        (
            "messages acknowledged twice, explained",
            tally.acks_twice_explained,
            "the first sender gone first",
        ),
        ("messages acknowledged twice, unexplained", tally.acks_twice_unexplained, "must be 0"),
        ("flag send_timed_out", tally.flagged_send_timed_out, ""),
        ("flag resent_after_crash", tally.flagged_resent_after_crash, ""),
        ("delivery attempts", tally.delivery_attempts, f"max {tally.max_delivery_attempts}"),
        ("Telegram 429s not injected", tally.limit_429, "must be 0"),
    ]
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [
        f"soak: {options.tasks} tasks, {options.user_count} users, seed {options.seed}, "
        f"{options.instances} instance(s) ({tally.mode}), {options.kill_count} kill(s), "
        f"{tally.database or 'no database'}",
        "",
    ]
    if tally.setup_error:
        lines += [f"  could not run: {tally.setup_error}", "", "SOAK FAILED"]
        return "\n".join(lines)
    lines += [f"  {name:<{width}}{value:>7}   {note}".rstrip() for name, value, note in rows]
    lines += ["", "faults injected:"]
    fwidth = max((len(name) for name in tally.faults), default=10) + 2
    lines += [f"  {name:<{fwidth}}{value:>7}" for name, value in tally.faults.items()]
    lines += ["", _instances_block(tally)]
    lines += ["", _metrics_block(tally)]
    exits = ", ".join(str(code) for code in tally.unexpected_exits) or "none"
    stops = ", ".join(f"{name} {code}" for name, code in tally.exit_codes) or "none"
    lines += [
        "",
        f"  kills (SIGKILL)        {tally.kills}",
        f"  stops mid-run (SIGTERM) {tally.terms}",
        f"  unexpected exits       {exits}",
        f"  exit codes on SIGTERM  {stops}",
        f"  Telegram's limit       peak {tally.limit_peak:.0f} of {tally.limit_capacity:.0f} "
        f"calls in the bucket ({options.telegram_rate:g}/s shared)",
        f"  settled                {'yes' if tally.settled else 'NO (deadline passed)'}",
        f"  wall time              {tally.wall:.1f} s",
        f"  database               {tally.database_note}",
    ]
    if tally.problems:
        lines += ["", "problems:"] + [f"  {line}" for line in tally.problems[:30]]
        if len(tally.problems) > 30:
            lines.append(f"  ... and {len(tally.problems) - 30} more")
    lines += ["", "SOAK PASSED" if tally.ok else f"SOAK FAILED (bot logs in {tally.workdir})"]
    return "\n".join(lines)


def _instances_block(tally: Tally) -> str:
    lines = ["instances (callbacks answered, updates received, messages sent, as seen outside):"]
    for figures in tally.instances:
        lines.append(
            f"  {figures.name:<6} {figures.callbacks:>6} callbacks {figures.updates:>6} updates "
            f"{figures.messages:>6} messages   {figures.lives} life/lives: "
            + ", ".join(figures.ends)
            + (f"; {figures.refused} connection(s) refused" if figures.refused else "")
            + (f"; {figures.limited} 429(s) past Telegram's limit" if figures.limited else "")
        )
    return "\n".join(lines)


def _metrics_block(tally: Tally) -> str:
    lines = [
        f"/metrics against the soak's own count ({tally.lives} lives, {tally.lives_cut} cut "
        "short by a kill or a stop mid-run):",
        "  bracket: between what had been answered when the scrape began and what had been "
        "sent when it ended, per life",
        "  at most: a life cut short loses what it did after its last scrape; exact otherwise",
    ]
    width = max((len(check.name) for check in tally.metric_checks), default=10) + 2
    for check in tally.metric_checks:
        if check.how == "at most":
            expected = f"<= {_figure(check.high)}"
        elif check.low == check.high:
            expected = _figure(check.low)
        else:
            expected = f"{_figure(check.low)}..{_figure(check.high)}"
        lines.append(
            f"  {check.name:<{width}}{_figure(check.metric):>7}   soak {expected:<13} "
            f"{check.how:<8} {'ok' if check.ok else 'MISMATCH'}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Faults:
    """The fault hooks of both fakes, drawing from the soak's seeded generator; Telegram's
    limit (`limit`) is applied first, to every call with a chat_id."""

    def __init__(
        self,
        plan: Plan,
        rng: random.Random,
        coze: FakeCoze,
        held_seconds: float,
        limit: TelegramLimit | None = None,
    ) -> None:
        self._plan = plan
        self.limit = limit
        self._rng = rng
        self._coze = coze
        self._held_seconds = held_seconds
        self._starts: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()

    def outcome_for(self, url: str) -> WorkflowOutcome:
        n = link_number(url)
        return self._plan.links[n].outcome if n in self._plan.links else WorkflowOutcome()

    def start_fault(self, params: dict[str, Any]) -> CozeFault | None:
        n = link_number(str(params.get(self._coze.url_parameter, "")))
        if n is None or n not in self._plan.links:
            return None
        attempt = self._starts[n]
        self._starts[n] += 1
        faults = self._plan.links[n].start_faults
        if attempt >= len(faults):
            return None
        fault = faults[attempt]
        lasting = fault.code in (4011, 4200)
        self.counts["coze start: lasting refusal" if lasting else "coze start: passing"] += 1
        return fault

    def history_fault(self, execute_id: str) -> CozeFault | None:
        run = self._coze.runs.get(execute_id)
        if run is not None:
            n = link_number(str(run.parameters.get(self._coze.url_parameter, "")))
            if n in self._plan.links and self._plan.links[n].late_callback and not run.finished:
                self.counts["coze history: hidden until a late callback"] += 1
                return CozeFault(5000, "internal error")
        if self._rng.random() < 0.15:
            self.counts["coze history: random fault"] += 1
            return self._rng.choice(
                (
                    CozeFault(5000, "internal error"),
                    CozeFault(0, "Bad Gateway", http_status=502),
                    CozeFault(0, "", drop_connection=True),
                )
            )
        return None

    def telegram_fault(
        self, method: str, params: dict[str, Any]
    ) -> TelegramFault | TelegramDelay | None:
        if self.limit is not None and "chat_id" in params and not self.limit.admit():
            # Telegram's limit, not the fault plan: counted apart (tally.limit_429), and
            # told from an injected 429 on the wire by its retry_after.
            return TelegramFault(
                429, f"Too Many Requests: retry after {LIMIT_RETRY_AFTER}", LIMIT_RETRY_AFTER
            )
        if method not in _FAULTY_METHODS:
            return None
        roll = self._rng.random()
        if roll < 0.006:
            self.counts["telegram 429 (retry_after 1)"] += 1
            return TelegramFault(429, "Too Many Requests: retry after 1", retry_after=1)
        if roll < 0.021:
            self.counts["telegram 500"] += 1
            return TelegramFault(500, "Internal Server Error")
        if roll < 0.027:
            self.counts["telegram reply held (bot times out)"] += 1
            return TelegramDelay(self._held_seconds, before=False)
        return None

    def summary(self, plan: Plan) -> dict[str, int]:
        links = plan.links.values()
        planned = {
            "callbacks lost": sum(p.outcome.callback == "lose" for p in links),
            "callbacks duplicated": sum(bool(p.outcome.duplicates) for p in links),
            "callbacks late (after the deadline)": sum(p.late_callback for p in links),
            "callbacks delayed (before the deadline)": sum(
                p.outcome.callback_delay > 0 and not p.late_callback for p in links
            ),
            "runs outlasting the deadline": sum(p.overdue_run for p in links),
            "runs failed": sum(p.kind == "fail" for p in links),
            "runs with no text": sum(p.kind == "empty" for p in links),
            "texts of 2-3 messages": sum(p.kind == "medium" for p in links),
            "texts sent as a document": sum(p.kind == "long" for p in links),
            "users who blocked the bot": len(plan.blocks),
        }
        return planned | dict(sorted(self.counts.items()))


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        problem = options.problem()
        if problem is not None:
            raise SoakSetupError(problem)
        self.options = options
        self.rng = random.Random(options.seed)
        self.telegram = FakeTelegram()
        self.coze = FakeCoze(callback_timeout=5.0, callback_backoff=0.2, seed=options.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="link2text-soak-"))
        self.database: SoakDatabase = (
            PostgresDatabase(options.database_url)
            if options.database_url
            else SqliteDatabase(self.workdir / DATABASE_NAME)
        )
        single = options.instances == 1
        self.instances = [
            Instance(index, self.workdir, single=single)
            for index in range(1, options.instances + 1)
        ]
        self.start_attempts = 4
        self.plan = make_plan(options, self.rng, self.start_attempts)
        held = options.request_timeout_seconds + 1.5
        self.limit = TelegramLimit(options.telegram_rate)
        self.faults = Faults(
            self.plan, random.Random(self.rng.random()), self.coze, held, self.limit
        )
        self.callback_secret = "soak-callback-secret-" + os.urandom(8).hex()
        self.webhook_secret = "soak-webhook-secret-" + os.urandom(8).hex()
        # One public URL in front of every instance (callbacks, webhook updates).
        self.proxy = RoundRobinProxy([f"http://127.0.0.1:{i.port}" for i in self.instances])
        self.taps: list[RoundRobinProxy] = []  # one per instance, in front of the fake Telegram
        self.coze_taps: list[RoundRobinProxy] = []  # one per instance, in front of the fake Coze
        self.starts: list[Seen] = []  # runs started at Coze, keyed by the attempt's run id
        self.acks: list[Seen] = []  # acknowledgements, keyed by the message they answer
        self.sent: dict[int, tuple[int, Forwarded]] = {}  # message id -> instance, its call
        self.polled: dict[Forwarded, int] = {}  # getUpdates call -> updates returned
        self.limited: Counter[int] = Counter()  # instance -> 429s past Telegram's limit
        self._began = 0.0  # when the soak began
        self._started = 0.0  # when every instance was ready: the plan's zero

    def say(self, text: str) -> None:
        if self.options.verbose:
            print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def settings(self, instance: Instance) -> Sections:
        options = self.options
        public = self.proxy.url
        sections = soak_sections(
            self.telegram,
            self.coze,
            self.workdir,
            port=instance.port,
            overrides={
                "telegram": {
                    "api_base_url": self.taps[instance.index - 1].url + "/bot",
                    "poll_timeout_seconds": 2,
                    "request_timeout_seconds": options.request_timeout_seconds,
                    "max_requests_per_second": options.telegram_rate,
                },
                "coze": {
                    "api_base_url": self.coze_taps[instance.index - 1].url,
                    "start_attempts": self.start_attempts,
                    "start_backoff_seconds": 0.2,
                    "history_checks_per_second": 100.0,
                    "max_concurrent_history_checks": 16,
                },
                "server": {"public_url": public, "callback_secret": self.callback_secret},
                "storage": {"database_url": self.database.url},
                "tasks": {
                    "timeout_seconds": options.timeout_seconds,
                    "reconcile_after_seconds": options.reconcile_after_seconds,
                    "max_check_interval_seconds": 3.0,
                    "scan_interval_seconds": 0.5,
                },
                "delivery": {
                    "scan_interval_seconds": 0.5,
                    "max_messages_per_second": options.telegram_rate / 2,
                    "per_chat_interval_seconds": 0.1,
                    "retry_backoff_seconds": 0.2,
                    "max_attempts": 12,
                    "max_text_messages": 3,
                },
            },
        )
        if options.instances > 1:
            # Each instance sends its share (1/N) of Telegram's budget; its claims on shared
            # work carry its own name (the same across restarts) and run out after
            # lease_seconds when it dies.
            sections["cluster"] = {
                "instances": options.instances,
                "instance_id": f"soak-{instance.name}",
                "lease_seconds": options.lease_seconds,
            }
        if options.webhook:
            sections["telegram"].update(
                {
                    "mode": "webhook",
                    "webhook_secret": self.webhook_secret,
                    "webhook_url": public + TELEGRAM_PATH,
                }
            )
        return sections

    # ---------------------------------------------------------------- the taps

    def _observer(self, instance: int) -> Callable[[Forwarded, bytes, bytes], None]:
        def observe(record: Forwarded, request: bytes, answer: bytes) -> None:
            method = record.path.rsplit("/", 1)[-1].lower()
            if method not in _SENDING_METHODS and method != "getupdates" and record.status != 429:
                return
            try:
                body = json.loads(answer)
            except ValueError:
                return
            if not isinstance(body, dict):
                return
            if record.status == 429:
                parameters = body.get("parameters")
                if isinstance(parameters, dict) and parameters.get("retry_after") == (
                    LIMIT_RETRY_AFTER
                ):
                    self.limited[instance] += 1
                return
            result = body.get("result")
            if method == "getupdates":
                self.polled[record] = len(result) if isinstance(result, list) else 0
            elif isinstance(result, dict) and isinstance(result.get("message_id"), int):
                self.sent[result["message_id"]] = (instance, record)
                replied = result.get("reply_to_message")
                chat = result.get("chat")
                if (
                    str(result.get("text", "")).startswith(ACK_PREFIX)
                    and isinstance(replied, dict)
                    and isinstance(chat, dict)
                ):
                    key = f"chat {chat.get('id')} message {replied.get('message_id')}"
                    self.acks.append(Seen(key, instance, record.started))

        return observe

    def _coze_observer(self, instance: int) -> Callable[[Forwarded, bytes, bytes], None]:
        def observe(record: Forwarded, request: bytes, answer: bytes) -> None:
            if record.method != "POST" or not record.path.endswith("/workflow/run"):
                return
            try:
                sent, got = json.loads(request), json.loads(answer)
            except ValueError:
                return
            parameters = sent.get("parameters") if isinstance(sent, dict) else None
            if (
                isinstance(got, dict)
                and got.get("code") == 0
                and got.get("execute_id")
                and isinstance(parameters, dict)
            ):
                key = f"run id {parameters.get('task_id')}"
                self.starts.append(Seen(key, instance, record.started))

        return observe

    def repeats(self, seen: list[Seen]) -> tuple[int, list[str]]:
        """Keys seen more than once: how many were explained (the instance that did it first
        was gone, killed or stopped, before it was done again), and a line for each other."""
        by_key: dict[str, list[Seen]] = {}
        for item in seen:
            by_key.setdefault(item.key, []).append(item)
        explained = 0
        unexplained: list[str] = []
        for key, items in by_key.items():
            if len(items) < 2:
                continue
            items.sort(key=lambda item: item.at)
            if all(
                self._gone_before(earlier.instance, earlier.at, later.at)
                for earlier, later in pairwise(items)
            ):
                explained += 1
            else:
                who = ", ".join(
                    f"bot{item.instance} at {item.at - self._started:.1f}s" for item in items
                )
                unexplained.append(f"{key}: {who}")
        return explained, unexplained

    def _gone_before(self, instance: int, at: float, moment: float) -> bool:
        life = self.instances[instance - 1].life_at(at)
        return life is not None and life.ended is not None and life.ended <= moment

    def senders(self) -> dict[int, Sender]:
        found: dict[int, Sender] = {}
        for message_id, (index, record) in self.sent.items():
            life = self.instances[index - 1].life_at(record.started)
            ended = record.ended if record.ended is not None else math.inf
            found[message_id] = Sender(
                instance=index,
                at=record.started - self._started,
                seconds=ended - record.started,
                life_ended=(
                    life.ended - self._started
                    if life is not None and life.ended is not None
                    else None
                ),
            )
        return found

    # ---------------------------------------------------------------- the instances

    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if instance.life is not None]

    async def _start(self, instance: Instance) -> None:
        instance.lives.append(Life(instance.index, time.monotonic()))
        await instance.process.start()

    async def _scrape(self, instance: Instance) -> None:
        life = instance.life
        if life is None:
            return
        scrape = await scrape_metrics(instance.port)
        if scrape is None:
            self.say(f"{instance.name}: GET /metrics did not answer")
            return
        life.scrape = scrape

    def _end_life(self, instance: Instance, how: str, exit_code: int | None = None) -> None:
        life = instance.life
        if life is not None:
            life.ended = time.monotonic()
            life.end = how
            life.exit_code = exit_code

    async def _take_down(self, instance: Instance, how: str) -> int | None:
        """Scrape /metrics, then SIGKILL or SIGTERM; the exit code on SIGTERM."""
        await self._scrape(instance)
        if how == "SIGKILL":
            await instance.process.kill()
            self._end_life(instance, "SIGKILL")
            return None
        code = await instance.process.stop()
        self._end_life(instance, "SIGTERM mid-run", code)
        return code

    async def _ready(self, timeout: float = 60.0) -> None:
        """Wait until every instance answers GET /readyz with 200 (the plan starts then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiting = list(self.instances)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while waiting:
                for instance in list(waiting):
                    if instance.process.check():
                        tail = "\n".join(instance.process.tail(15))
                        raise SoakSetupError(f"{instance.name} exited at start:\n{tail}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        url = f"http://127.0.0.1:{instance.port}/readyz"
                        async with session.get(url) as response:
                            if response.status == 200:
                                waiting.remove(instance)
                if waiting and loop.time() > deadline:
                    names = ", ".join(instance.name for instance in waiting)
                    raise SoakSetupError(f"not ready after {timeout:.0f} s: {names}")
                await asyncio.sleep(0.1)

    async def _revive(self) -> None:
        """Restart any instance that exited by itself (counted as a crash)."""
        for instance in self.instances:
            if instance.down or instance.retired:
                continue
            process = instance.process
            if process.check() or process.process is None:
                code = process.unexpected_exits[-1] if process.unexpected_exits else None
                self._end_life(instance, f"exited by itself ({code})", code)
                self.say(f"{instance.name} exited by itself ({code})! restarting it")
                await self._start(instance)

    # ---------------------------------------------------------------- the run

    async def run(self) -> Tally:
        self._began = self._started = time.monotonic()
        await self.telegram.start()
        await self.coze.start()
        for instance in self.instances:
            tap = RoundRobinProxy([self.telegram.url], observer=self._observer(instance.index))
            await tap.start()
            self.taps.append(tap)
            coze_tap = RoundRobinProxy(
                [self.coze.url], observer=self._coze_observer(instance.index)
            )
            await coze_tap.start()
            self.coze_taps.append(coze_tap)
        await self.proxy.start()
        self.coze.outcome_for = self.faults.outcome_for
        self.coze.start_fault = self.faults.start_fault
        self.coze.history_fault = self.faults.history_fault
        self.telegram.fault_hook = self.faults.telegram_fault
        tally = Tally()
        try:
            for instance in self.instances:
                write_config(instance.process.config, self.settings(instance))
            await self.database.create()
            await migrate(self.instances[0].process.config, self.workdir / "migrate.log")
            for instance in self.instances:
                await self._start(instance)
            await self._ready()
            self._started = time.monotonic()
            self.say(
                f"{len(self.instances)} bot instance(s) started ({self.mode}, "
                f"{self.database.description}); {len(self.plan.pastes)} pastes over "
                f"{self.plan.send_period:.0f} s; "
                + (
                    ", ".join(
                        f"{kill.signal} bot{kill.instance if len(self.instances) > 1 else ''} "
                        f"at {kill.at:.1f}s"
                        for kill in self.plan.kills
                    )
                    or "no kills"
                )
            )
            users = asyncio.create_task(self._users())
            killer = asyncio.create_task(self._killer())
            try:
                await self._watch(lambda: users.done() and killer.done())
                await asyncio.gather(users, killer)
                settled = await self._settle()
            finally:
                for task in (users, killer):
                    task.cancel()
                await asyncio.gather(users, killer, return_exceptions=True)
            live = self.live()
            await asyncio.gather(*(self._scrape(instance) for instance in live))
            self.say(f"stopping {len(live)} instance(s) (SIGTERM)")
            codes = await asyncio.gather(*(instance.process.stop() for instance in live))
            for instance, code in zip(live, codes, strict=True):
                self._end_life(instance, "stopped at the end", code)
                tally.exit_codes.append((instance.name, code))
            rows = await self.database.read_tasks()
            received = received_by_link(self.telegram, self._users_list())
            tally = self._tally(rows, received, tally.exit_codes)
            tally.settled = settled
        except SoakSetupError as exc:
            tally.setup_error = str(exc)
        finally:
            for instance in self.instances:
                instance.process.force_kill()
                with contextlib.suppress(Exception):
                    await instance.process.stop(grace=2.0)
            await self.proxy.stop()
            for tap in self.taps + self.coze_taps:
                await tap.stop()
            await self.coze.stop()
            await self.telegram.stop()
            tally.unexpected_exits = [
                code for instance in self.instances for code in instance.process.unexpected_exits
            ]
            tally.kills = sum(instance.process.kills for instance in self.instances)
            tally.faults = self.faults.summary(self.plan)
            tally.limit_429 = self.limit.refused
            tally.limit_peak = self.limit.peak
            tally.limit_capacity = self.limit.capacity
            tally.mode = self.mode
            tally.database = self.database.description
            tally.workdir = str(self.workdir)
            tally.database_note = await self._finish_database()
            tally.wall = time.monotonic() - self._began
            if tally.ok and not self.options.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return tally

    @property
    def mode(self) -> str:
        return "webhook" if self.options.webhook else "polling"

    async def _finish_database(self) -> str:
        if isinstance(self.database, SqliteDatabase):
            return "kept with the work directory" if self.options.keep_workdir else "a file"
        if self.options.keep_workdir:
            return f"kept: {self.database.url}"
        try:
            await self.database.drop()
        except Exception as exc:
            return f"could not be dropped ({type(exc).__name__}: {exc})"
        return "dropped"

    def _tally(
        self,
        rows: list[TaskRow],
        received: dict[int, Received],
        exit_codes: list[tuple[str, int | None]],
    ) -> Tally:
        tally = make_tally(
            self.plan,
            rows,
            received,
            self.coze,
            senders=self.senders(),
            request_timeout=self.options.request_timeout_seconds,
        )
        tally.exit_codes = list(exit_codes)
        tally.terms = sum(life.end == "SIGTERM mid-run" for i in self.instances for life in i.lives)
        for instance in self.instances:
            for life in instance.lives:
                if life.end == "SIGTERM mid-run":
                    tally.exit_codes.insert(0, (f"{instance.name} (mid-run)", life.exit_code))
        codes = [code for _, code in tally.exit_codes]
        tally.exit_code = next((code for code in codes if code != 0), 0) if codes else None
        lives = [life for instance in self.instances for life in instance.lives]
        tally.lives = len(lives)
        tally.lives_cut = sum(life.cut for life in lives)
        tally.instances = [self._figures(instance) for instance in self.instances]
        tally.runs_twice_explained, runs = self.repeats(self.starts)
        tally.runs_twice_unexplained = len(runs)
        tally.problems += [f"started twice: {line}" for line in runs]
        tally.acks_twice_explained, acks = self.repeats(self.acks)
        tally.acks_twice_unexplained = len(acks)
        tally.problems += [f"acknowledged twice: {line}" for line in acks]
        if self.limit.refused:
            tally.problems.append(
                f"Telegram answered {self.limit.refused} 429(s) past its limit (not injected): "
                f"the instances together sent more than {self.options.telegram_rate:g} calls "
                "a second"
            )
        tally.metric_checks = self._metric_checks(rows, received)
        for check in tally.metric_checks:
            if not check.ok:
                tally.problems.append(
                    f"/metrics: {check.name} is {_figure(check.metric)}, the soak counted "
                    f"{_figure(check.low)}..{_figure(check.high)} ({check.how})"
                )
        return tally

    def _figures(self, instance: Instance) -> InstanceFigures:
        index = instance.index
        forwarded = self.proxy.forwarded_to(index - 1)
        tap = self.taps[index - 1]
        if self.options.webhook:
            updates = sum(r.answered for r in forwarded if r.path == TELEGRAM_PATH)
        else:
            mine = set(tap.records)
            updates = sum(count for record, count in self.polled.items() if record in mine)
        return InstanceFigures(
            name=instance.name,
            lives=len(instance.lives),
            ends=[life.end or "running" for life in instance.lives],
            callbacks=sum(r.answered for r in forwarded if r.path == CALLBACK_PATH),
            updates=updates,
            messages=sum(entry[0] == index for entry in self.sent.values()),
            refused=self.proxy.refused[index - 1],
            limited=self.limited[index],
        )

    # ---------------------------------------------------------------- /metrics

    def _requests(self, life: Life, path: str) -> list[Forwarded]:
        return [
            record
            for record in self.proxy.forwarded_to(life.instance - 1)
            if record.path == path and life.covers(record.started)
        ]

    def _metric_checks(
        self, rows: list[TaskRow], received: dict[int, Received]
    ) -> list[MetricCheck]:
        lives = [life for instance in self.instances for life in instance.lives]
        scraped = [life for life in lives if life.scrape is not None]
        checks: list[MetricCheck] = []

        def total(name: str, **labels: str) -> float:
            return sum(life.scrape.value(name, **labels) for life in scraped if life.scrape)

        # Callbacks by answer: every one went through the proxy.
        statuses = {
            str(record.status)
            for life in lives
            for record in self._requests(life, CALLBACK_PATH)
            if record.status is not None
        }
        for life in scraped:
            assert life.scrape is not None
            statuses |= life.scrape.labels("link2text_callbacks_total", "status")
        for status in sorted(statuses):
            low, high = _bracket(
                scraped,
                lambda life: self._requests(life, CALLBACK_PATH),
                _status_is(status),
            )
            metric = total("link2text_callbacks_total", status=status)
            checks.append(MetricCheck(f"callbacks answered {status}", metric, low, high, "bracket"))

        # Updates received: through the proxy (webhook) or the taps' getUpdates (polling).
        if self.options.webhook:
            low, high = _bracket(
                scraped, lambda life: self._requests(life, TELEGRAM_PATH), lambda record: True
            )
            source = "webhook"
        else:
            low, high = self._polled_bracket(scraped)
            source = "polling"
        metric = total("link2text_telegram_updates_total", source=source)
        checks.append(MetricCheck(f"Telegram updates ({source})", metric, low, high, "bracket"))

        # What the instances did on their own: exact when no life was cut short.
        cut = any(life.cut for life in lives)

        def counted(name: str, metric: float, soak: float) -> MetricCheck:
            return MetricCheck(
                name, metric, 0 if cut else soak, soak, "at most" if cut else "exact"
            )

        # An outcome that reached its user counts once it is marked delivered; a timeout
        # notice may lose that mark to the late text that superseded it on the wire.
        delivered = sum(
            outcomes_received(plan, received.get(n)) for n, plan in self.plan.links.items()
        )
        superseded = sum(
            outcomes_received(plan, got) == 2 and text_complete(plan, got)
            for n, plan in self.plan.links.items()
            if (got := received.get(n)) is not None
        )
        metric = total("link2text_deliveries_total", result="delivered")
        if cut:
            checks.append(MetricCheck("deliveries delivered", metric, 0, delivered, "at most"))
        else:
            checks.append(
                MetricCheck(
                    "deliveries delivered", metric, delivered - superseded, delivered, "bracket"
                )
            )
        checks.append(
            counted(
                "Coze start calls",
                total("link2text_coze_calls_total", call="start"),
                self.coze.start_calls,
            )
        )
        checks.append(
            counted(
                "Coze runs started (ok)",
                total("link2text_coze_calls_total", call="start", result="ok"),
                len(self.coze.runs),
            )
        )
        checks.append(
            counted(
                "Coze run-history calls",
                total("link2text_coze_calls_total", call="run_history"),
                self.coze.history_calls,
            )
        )

        # Read from the database when scraped: equal to the soak's reading at the end.
        final = [
            life for life in scraped if life.end == "stopped at the end" and life.scrape is not None
        ]
        if final:
            scrape = final[0].scrape
            assert scrape is not None
            by_state = Counter(row.state for row in rows)
            states = set(by_state) | scrape.labels("link2text_tasks", "state")
            for state in sorted(states):
                soak = by_state.get(state, 0)
                metric = scrape.value("link2text_tasks", state=state)
                checks.append(
                    MetricCheck(f"tasks {state} (at the end)", metric, soak, soak, "exact")
                )
            soak = outstanding(rows)
            metric = scrape.value("link2text_outbox_backlog")
            checks.append(MetricCheck("outbox backlog (at the end)", metric, soak, soak, "exact"))
        return checks

    def _polled_bracket(self, lives: list[Life]) -> tuple[float, float]:
        """Per life: at least the updates of every getUpdates answer that a later call (made
        before the scrape began) confirmed, since the bot counts a batch before asking again;
        at most those of every answer that reached the tap before the scrape ended."""
        low = high = 0.0
        for life in lives:
            scrape = life.scrape
            if scrape is None:
                continue
            tap = self.taps[life.instance - 1]
            calls = sorted(
                (
                    record
                    for record in tap.records
                    if record.path.lower().endswith("/getupdates") and life.covers(record.started)
                ),
                key=lambda record: record.started,
            )
            made = [record for record in calls if record.started <= scrape.began]
            low += sum(self.polled.get(record, 0) for record in made[:-1] if record.answered)
            high += sum(
                self.polled.get(record, 0) for record in calls if record.answered_by(scrape.ended)
            )
        return low, high

    # ---------------------------------------------------------------- users, kills, settling

    def _users_list(self) -> list[int]:
        return sorted({paste.user for paste in self.plan.pastes})

    async def _users(self) -> None:
        blocks = sorted((at, user) for user, at in self.plan.blocks.items())
        for paste in self.plan.pastes:
            while blocks and blocks[0][0] <= paste.at:
                _, user = blocks.pop(0)
                self.telegram.block(user)
            await asyncio.sleep(max(0.0, paste.at - self.elapsed()))
            links = " ".join(link(n) for n in paste.links)
            self.telegram.user_sends(paste.user, f"看看这个视频 {links} 复制打开抖音")
        for _, user in blocks:
            self.telegram.block(user)
        self.say(f"all {self.options.tasks} links pasted")

    async def _killer(self) -> None:
        single = len(self.instances) == 1
        for kill in self.plan.kills:
            await asyncio.sleep(max(0.0, kill.at - self.elapsed()))
            instance = self.instances[kill.instance - 1]
            if single:
                instance.down = True
            else:
                instance.retired = True
            code = await self._take_down(instance, kill.signal)
            if not single:
                done = "killed (SIGKILL)" if kill.signal == "SIGKILL" else f"stopped ({code})"
                self.say(f"{instance.name} {done}; it stays down, the others carry on")
                continue
            self.say(f"bot killed (SIGKILL); restarting in {kill.down:.1f} s")
            await asyncio.sleep(kill.down)
            await self._start(instance)
            instance.down = False
            self.say("bot restarted on the same database")

    async def _watch(self, done: Callable[[], bool]) -> None:
        """Wait until `done()`, restarting an instance that exits by itself (a crash)."""
        while not done():
            await asyncio.sleep(0.2)
            await self._revive()

    async def _settle(self) -> bool:
        """Wait until nothing is left to do; False when the deadline passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.settle_deadline_seconds
        quiet = 0
        last_report = 0.0
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            await self._revive()
            rows = await self.database.read_tasks()
            left = outstanding(rows)
            runs_left = sum(not run.finished for run in self.coze.runs.values())
            updates = self.telegram.pending_updates()
            calm = left == 0 and runs_left == 0 and updates == 0 and not self.telegram.held_replies
            quiet = quiet + 1 if calm else 0
            if quiet >= 4:
                self.say(f"settled: {len(rows)} tasks, nothing left to do")
                return True
            if loop.time() - last_report > 5:
                last_report = loop.time()
                self.say(
                    f"settling: {left} task(s) outstanding, {runs_left} Coze run(s) going, "
                    f"{updates} update(s) queued"
                )
        self.say("deadline passed before everything settled")
        return False


def _status_is(status: str) -> Callable[[Forwarded], bool]:
    return lambda record: str(record.status) == status


def _bracket(
    lives: Iterable[Life],
    requests: Callable[[Life], list[Forwarded]],
    matches: Callable[[Forwarded], bool],
) -> tuple[float, float]:
    """Per life: at least the matching requests answered before its scrape began (the bot
    counts before it answers), at most those answered before it ended plus any sent before it
    ended and not answered by then (in flight, or broken off: their answer is unknown)."""
    low = high = 0.0
    for life in lives:
        scrape = life.scrape
        if scrape is None:
            continue
        for record in requests(life):
            if record.answered_by(scrape.began) and matches(record):
                low += 1
            if record.started <= scrape.ended and (
                not record.answered_by(scrape.ended) or matches(record)
            ):
                high += 1
    return low, high


async def run_soak(options: SoakOptions) -> Tally:
    """Run one soak and return its tally (the caller prints or asserts on it)."""
    return await Soak(options).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--kills",
        type=int,
        default=None,
        help="instances killed or stopped mid-run (default 3 with one instance, else 2)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="links pasted per second")
    parser.add_argument("--instances", type=int, default=1, help="bot processes (default 1)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (postgres://user@host:port/db): the soak creates a database "
        "of its own there (default: an SQLite file)",
    )
    parser.add_argument(
        "--mode",
        choices=("polling", "webhook"),
        default=None,
        help="how Telegram's updates arrive (default: polling for one instance, else webhook)",
    )
    parser.add_argument(
        "--telegram-rate",
        type=float,
        default=300.0,
        help="requests a second Telegram allows the bot, shared by the instances",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A bot killed in the middle of a request leaves the fakes a reset connection: expected.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    options = SoakOptions(
        tasks=args.tasks,
        users=args.users,
        seed=args.seed,
        kills=args.kills,
        links_per_second=args.rate,
        keep_workdir=args.keep,
        instances=args.instances,
        database_url=args.database_url,
        mode=args.mode,
        telegram_rate=args.telegram_rate,
    )
    problem = options.problem()
    if problem is not None:
        parser.error(problem)
    tally = asyncio.run(run_soak(options))
    print()
    print(format_tally(tally, options))
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())

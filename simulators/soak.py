"""`make soak`: thousands of links through the real bot process, with faults and crashes.

``python -m simulators.soak [--tasks N] [--users U] [--seed S] [--kills K]``

The fake Telegram and the fake Coze run in this process; the bot runs as a subprocess
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
- the bot killed with SIGKILL at random moments and restarted on the same database and port
  (links pasted meanwhile wait in the fake's getUpdates queue).

At the end it waits until everything has settled (or a generous deadline), stops the bot with
SIGTERM, reads the database with sqlite3 and prints a tally of what each user received. Exit
status 1 when a task is stuck (pending/processing), lost (nothing reached its user, who had
not blocked the bot), or reached its user twice with no flag in the database explaining it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import SECRET_ENV
from simulators.coze import FAIL_ERROR_CODE, CozeFault, FakeCoze, FakeRun, WorkflowOutcome
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

# Methods whose Telegram calls may get a random fault (the bot's sends and edits).
_FAULTY_METHODS = frozenset(
    {"sendmessage", "senddocument", "editmessagetext", "editmessagereplymarkup"}
)

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


# --------------------------------------------------------------------------------------------
# Options and the plan (every random choice, made up front from the seed)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakOptions:
    tasks: int = 2000
    users: int | None = None  # default: one user per 25 tasks, at least 5
    seed: int = DEFAULT_SEED
    kills: int = 3
    links_per_second: float = 20.0  # how fast users paste, on average
    timeout_seconds: float = 16.0  # tasks.timeout_seconds
    reconcile_after_seconds: float = 1.5
    request_timeout_seconds: float = 2.0  # telegram.request_timeout_seconds
    settle_deadline_seconds: float = 240.0  # after the last paste and the last restart
    verbose: bool = True  # progress lines on stdout
    keep_workdir: bool = False  # keep the database and log even when the soak passes

    @property
    def user_count(self) -> int:
        return self.users if self.users is not None else max(5, self.tasks // 25)


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


@dataclass
class Plan:
    links: dict[int, LinkPlan]
    pastes: list[Paste]
    blocks: dict[int, float]  # user -> when they block the bot
    kills: list[tuple[float, float]]  # (when, seconds down)
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
    kills: list[tuple[float, float]] = []
    if options.kills:
        window = max(at, 3.0 * options.kills)
        moments = sorted(rng.uniform(0.1, 1.1) * window for _ in range(options.kills))
        earliest = 0.0
        for moment in moments:
            down = rng.uniform(0.3, 3.0)
            moment = max(moment, earliest)
            kills.append((moment, down))
            earliest = moment + down + 3.0  # let the restarted bot get going first
    return Plan(links=links, pastes=pastes, blocks=blocks, kills=kills, send_period=at)


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

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
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
                "bot",
                "--config",
                str(self.config),
                cwd=PROJECT_ROOT,
                env=bot_environment(),
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


# --------------------------------------------------------------------------------------------
# The database, read with sqlite3
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


def read_tasks(database: Path) -> list[TaskRow]:
    """Every row of `tasks` (empty when the database does not exist yet)."""
    if not database.exists():
        return []
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        try:
            rows = db.execute(
                "SELECT id, input_url, chat_id, state, notification_sent, undeliverable, "
                "send_timed_out, resent_after_crash, delivery_attempts, retry_count "
                "FROM tasks ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # the first start has not migrated yet
            raise
    return [
        TaskRow(
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
        for row in rows
    ]


OPEN_STATES = ("pending", "processing")


def outstanding(rows: list[TaskRow]) -> int:
    """Tasks not settled yet: still running, or an outcome not yet sent nor given up."""
    return sum(
        row.state in OPEN_STATES or not (row.notification_sent or row.undeliverable) for row in rows
    )


# --------------------------------------------------------------------------------------------
# The tally
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    """What one link's user received from the bot about it."""

    texts: list[str] = field(default_factory=list)  # text pieces, document contents
    notices: list[str] = field(default_factory=list)  # failure and timeout notices
    copies: Counter[tuple[str, bytes | None]] = field(default_factory=Counter)


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
    got.copies[(text, message.document)] += 1
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


def _accepted_success(runs: list[FakeRun]) -> bool:
    """A final success callback of one of these runs was answered 200 by the bot."""
    for run in runs:
        for body, status in zip(run.callbacks_sent, run.callback_replies, strict=False):
            if body.get("status") == "success" and status == 200:
                return True
    return False


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
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    unexpected_exits: list[int] = field(default_factory=list)
    exit_code: int | None = None
    settled: bool = False
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)  # one line per bad link, for the report
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.stuck == 0
            and self.lost == 0
            and self.duplicates_unexplained == 0
            and self.dropped_texts == 0
            and self.exit_code == 0
            and not self.unexpected_exits
        )


def make_tally(
    plan: Plan,
    rows: list[TaskRow],
    received: dict[int, Received],
    coze: FakeCoze,
) -> Tally:
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
        if got is not None and any(count > 1 for count in got.copies.values()):
            if any(task.send_timed_out or task.resent_after_crash for task in tasks):
                tally.duplicates_explained += 1
            else:
                tally.duplicates_unexplained += 1
                tally.problems.append(
                    f"unexplained duplicate: link {n} ({link_plan.kind}): {_describe(tasks, got)}"
                )
    return tally


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
        copies = max(got.copies.values(), default=0)
        seen = f"the user has {len(got.texts)} text piece(s), {len(got.notices)} notice(s)"
        if copies > 1:
            seen += f", one message {copies} times"
    return f"{db}; {seen}"


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
            "flagged send_timed_out or resent_after_crash",
        ),
        ("duplicates, unexplained", tally.duplicates_unexplained, "must be 0"),
        ("stuck (pending/processing)", tally.stuck, "must be 0"),
        (
            "lost (nothing reached the user)",
            tally.lost,
            f"must be 0; {tally.never_stored} never stored",
        ),
        ("texts dropped (callback accepted)", tally.dropped_texts, "must be 0"),
        ("links that became 2+ tasks", tally.extra_tasks, ""),
        ("flag send_timed_out", tally.flagged_send_timed_out, ""),
        ("flag resent_after_crash", tally.flagged_resent_after_crash, ""),
        ("delivery attempts", tally.delivery_attempts, f"max {tally.max_delivery_attempts}"),
    ]
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [
        f"soak: {options.tasks} tasks, {options.user_count} users, seed {options.seed}, "
        f"{options.kills} kill(s)",
        "",
    ]
    lines += [f"  {name:<{width}}{value:>7}   {note}".rstrip() for name, value, note in rows]
    lines += ["", "faults injected:"]
    fwidth = max((len(name) for name in tally.faults), default=10) + 2
    lines += [f"  {name:<{fwidth}}{value:>7}" for name, value in tally.faults.items()]
    exits = ", ".join(str(code) for code in tally.unexpected_exits) or "none"
    lines += [
        "",
        f"  kills (SIGKILL)        {tally.kills}",
        f"  unexpected exits       {exits}",
        f"  exit code on SIGTERM   {tally.exit_code}",
        f"  settled                {'yes' if tally.settled else 'NO (deadline passed)'}",
        f"  wall time              {tally.wall:.1f} s",
    ]
    if tally.problems:
        lines += ["", "problems:"] + [f"  {line}" for line in tally.problems[:30]]
        if len(tally.problems) > 30:
            lines.append(f"  ... and {len(tally.problems) - 30} more")
    lines += ["", "SOAK PASSED" if tally.ok else f"SOAK FAILED (bot log: {tally.workdir}/bot.log)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Faults:
    """The fault hooks of both fakes, drawing from the soak's seeded generator."""

    def __init__(self, plan: Plan, rng: random.Random, coze: FakeCoze, held_seconds: float) -> None:
        self._plan = plan
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
        self.options = options
        self.rng = random.Random(options.seed)
        self.telegram = FakeTelegram()
        self.coze = FakeCoze(callback_timeout=5.0, callback_backoff=0.2, seed=options.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="link2text-soak-"))
        self.database = self.workdir / DATABASE_NAME
        self.bot = BotProcess(self.workdir / "config.toml", self.workdir / "bot.log")
        self.start_attempts = 4
        self.plan = make_plan(options, self.rng, self.start_attempts)
        held = options.request_timeout_seconds + 1.5
        self.faults = Faults(self.plan, random.Random(self.rng.random()), self.coze, held)
        self._started = 0.0
        self._down = False

    def say(self, text: str) -> None:
        if self.options.verbose:
            print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def settings(self, port: int) -> Sections:
        options = self.options
        return soak_sections(
            self.telegram,
            self.coze,
            self.workdir,
            port=port,
            overrides={
                "telegram": {
                    "poll_timeout_seconds": 2,
                    "request_timeout_seconds": options.request_timeout_seconds,
                    "max_requests_per_second": 300.0,
                },
                "coze": {
                    "start_attempts": self.start_attempts,
                    "start_backoff_seconds": 0.2,
                    "history_checks_per_second": 100.0,
                    "max_concurrent_history_checks": 16,
                },
                "tasks": {
                    "timeout_seconds": options.timeout_seconds,
                    "reconcile_after_seconds": options.reconcile_after_seconds,
                    "max_check_interval_seconds": 3.0,
                    "scan_interval_seconds": 0.5,
                },
                "delivery": {
                    "scan_interval_seconds": 0.5,
                    "max_messages_per_second": 150.0,
                    "per_chat_interval_seconds": 0.1,
                    "retry_backoff_seconds": 0.2,
                    "max_attempts": 12,
                    "max_text_messages": 3,
                },
            },
        )

    async def run(self) -> Tally:
        self._started = time.monotonic()
        await self.telegram.start()
        await self.coze.start()
        self.coze.outcome_for = self.faults.outcome_for
        self.coze.start_fault = self.faults.start_fault
        self.coze.history_fault = self.faults.history_fault
        self.telegram.fault_hook = self.faults.telegram_fault
        tally = Tally()
        try:
            write_config(self.bot.config, self.settings(free_port()))
            await self.bot.start()
            self.say(
                f"bot started; {len(self.plan.pastes)} pastes over "
                f"{self.plan.send_period:.0f} s, kills at "
                + (", ".join(f"{at:.1f}s" for at, _ in self.plan.kills) or "none")
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
            self.say("stopping the bot (SIGTERM)")
            exit_code = await self.bot.stop()
            rows = await asyncio.to_thread(read_tasks, self.database)
            received = received_by_link(self.telegram, self._users_list())
            tally = make_tally(self.plan, rows, received, self.coze)
            tally.exit_code = exit_code
            tally.settled = settled
        finally:
            self.bot.force_kill()
            with contextlib.suppress(Exception):
                await self.bot.stop(grace=2.0)
            await self.coze.stop()
            await self.telegram.stop()
            tally.kills = self.bot.kills
            tally.unexpected_exits = list(self.bot.unexpected_exits)
            tally.faults = self.faults.summary(self.plan)
            tally.wall = self.elapsed()
            tally.workdir = str(self.workdir)
            if tally.ok and not self.options.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return tally

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
        for at, down in self.plan.kills:
            await asyncio.sleep(max(0.0, at - self.elapsed()))
            self._down = True
            await self.bot.kill()
            self.say(f"bot killed (SIGKILL); restarting in {down:.1f} s")
            await asyncio.sleep(down)
            await self.bot.start()
            self._down = False
            self.say("bot restarted on the same database")

    async def _watch(self, done: Callable[[], bool]) -> None:
        """Wait until `done()`, restarting the bot if it exits by itself (counted as a crash)."""
        while not done():
            await asyncio.sleep(0.2)
            if not self._down and self.bot.check():
                self.say(f"the bot exited by itself ({self.bot.unexpected_exits[-1]})!")
                await self.bot.start()

    async def _settle(self) -> bool:
        """Wait until nothing is left to do; False when the deadline passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.settle_deadline_seconds
        quiet = 0
        last_report = 0.0
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            if self.bot.check() or self.bot.process is None:
                self.say("the bot exited by itself while settling; restarting it")
                await self.bot.start()
                continue
            rows = await asyncio.to_thread(read_tasks, self.database)
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


async def run_soak(options: SoakOptions) -> Tally:
    """Run one soak and return its tally (the caller prints or asserts on it)."""
    return await Soak(options).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.soak", description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="links pasted per second")
    parser.add_argument("--keep", action="store_true", help="keep the database and the log")
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
    )
    tally = asyncio.run(run_soak(options))
    print()
    print(format_tally(tally, options))
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The scenarios of `make bench`, each on a real bot process of its own (`MeasuredBot`).

The simulators run in the benchmark's process; the bot talks to them over real sockets, as it
would to Telegram and Coze. Users paste with `FakeTelegram.user_sends`; the fake stamps each
message the bot sends as it stores it (`on_message`), so a latency is from the paste being
queued (the bot sees it on its next long poll) to the reply reaching the Bot API.
Each scenario returns its figures as a flat dict of numbers (the JSON and the table read it).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tortoise.timezone import now

from bot.config import LimitSettings
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.measured_bot import measured_bot
from simulators.settings import Sections, TomlValue, bot_settings
from simulators.telegram import FakeTelegram, SentMessage
from storage import Task, TaskRun, TaskState, User, open_database

SECRET = "bench-callback-secret-0123456789"
TEXT = "这是视频里说的话。This is what the video says. " * 30  # ~1,400 characters
ACK_PREFIX = "Got it!"
TELEGRAM_RATE = 30.0  # Telegram's bot-wide limit, which the strict fake enforces

Figures = dict[str, float]


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1), inclusive method; NaN when there are no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def spread(prefix: str, seconds: list[float]) -> Figures:
    """p50 and p99 of latencies, in milliseconds."""
    return {
        f"{prefix}_p50_ms": quantile(seconds, 0.5) * 1000,
        f"{prefix}_p99_ms": quantile(seconds, 0.99) * 1000,
    }


@dataclass
class Stopwatch:
    """When each pasted message was queued, and when the bot's acknowledgement and text of it
    reached the fake Bot API; texts are also counted per chat (outcomes stored before the
    bot started reply to nothing the fake knows)."""

    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    acks: dict[tuple[int, int], float] = field(default_factory=dict)
    texts: dict[tuple[int, int], float] = field(default_factory=dict)
    chats_with_text: set[int] = field(default_factory=set)

    def __call__(self, message: SentMessage) -> None:
        moment = time.perf_counter()
        is_ack = (message.text or "").startswith(ACK_PREFIX)
        if not is_ack:
            self.chats_with_text.add(message.chat_id)
        if message.reply_to_message_id is None:
            return
        key = (message.chat_id, message.reply_to_message_id)
        (self.acks if is_ack else self.texts).setdefault(key, moment)

    def paste(self, telegram: FakeTelegram, user: int, text: str) -> None:
        message = telegram.user_sends(user, text)
        self.sent[(user, int(message["message_id"]))] = time.perf_counter()

    def ack_waits(self, users: set[int] | None = None) -> list[float]:
        return self._waits(self.acks, users)

    def text_waits(self) -> list[float]:
        return self._waits(self.texts, None)

    def _waits(self, seen: dict[tuple[int, int], float], users: set[int] | None) -> list[float]:
        return [
            seen[key] - moment
            for key, moment in self.sent.items()
            if key in seen and (users is None or key[0] in users)
        ]


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the benchmark waited {timeout:g} s for {what}")
        await asyncio.sleep(0.02)


def sections_for(
    telegram: FakeTelegram,
    coze: FakeCoze,
    workdir: Path,
    name: str,
    changes: dict[str, dict[str, TomlValue]] | None = None,
) -> Sections:
    """The simulators' settings, on the database `name`.sqlite3, with `changes` applied."""
    sections = bot_settings(
        telegram,
        coze,
        workdir,
        callback_secret=SECRET,
        database_name=f"{name}.sqlite3",
        log_level="WARNING",
    )
    for section, values in (changes or {}).items():
        sections.setdefault(section, {}).update(values)
    return sections


def budget_figures(telegram: FakeTelegram, since: float, rate: float) -> Figures:
    """How much of Telegram's budget the calls since `since` used, over their whole span (the
    first call's second counts as a full window)."""
    calls = [moment for moment in telegram.counted_calls if moment >= since]
    span = (calls[-1] - calls[0] + 1.0) if calls else 1.0
    return {
        "calls": len(calls),
        "calls_per_s": len(calls) / span,
        "budget_used": len(calls) / span / rate,
    }


# --- acknowledgements at a steady rate of new users, no backlog -------------------------------


async def steady_users(
    telegram: FakeTelegram, coze: FakeCoze, workdir: Path, *, rate: float, seconds: float
) -> Figures:
    """`rate` new users a second paste one link each, for `seconds`, against a Bot API that
    refuses calls past 30 in any second. Workflows take 1.5 x `seconds` + 1 s, as real ones take
    tens of seconds: no text competes with the acknowledgements (no backlog; `draining_backlog`
    measures them with one)."""
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, duration=seconds * 1.5 + 1.0)
    stopwatch = Stopwatch()
    telegram.on_message = stopwatch
    users = [60_000 + n for n in range(round(rate * seconds))]
    refused = telegram.over_limit
    telegram.max_requests_per_second = TELEGRAM_RATE
    try:
        async with measured_bot(workdir, "steady", sections_for(telegram, coze, workdir, "steady")):
            started = time.perf_counter()
            for n, user in enumerate(users):
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                stopwatch.paste(telegram, user, f"看看 https://v.douyin.com/steady-{user}/")
            await until(lambda: len(stopwatch.texts) >= len(users), 120, "the texts")
    finally:
        telegram.max_requests_per_second = None
        telegram.on_message = None
    return {
        "users": len(users),
        **spread("ack", stopwatch.ack_waits()),
        **spread("text", stopwatch.text_waits()),
        "telegram_429": telegram.over_limit - refused,
    }


# --- acknowledgements while a backlog of texts drains ----------------------------------------


async def store_tasks(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Store tasks (each row a Task's fields; one task per user, each user's first) with their
    users and runs, straight into the database before the bot starts. Rows, not Task objects:
    a model built before Tortoise is set up drops its foreign keys."""
    async with open_database(database_url):
        await User.bulk_create(
            [User(id=row["user_id"], first_name="U") for row in rows], batch_size=500
        )
        await Task.bulk_create([Task(**row) for row in rows], batch_size=500)
        ids = {task.run_id: task.id for task in await Task.all().only("id", "run_id")}
        await TaskRun.bulk_create(
            [TaskRun(run_id=run_id, task_id=task_id) for run_id, task_id in ids.items()],
            batch_size=500,
        )


async def store_settled_outcomes(database_url: str, chats: list[int]) -> None:
    """One completed task per chat whose text has not been sent: a backlog, before the bot
    starts."""
    moment = now()
    await store_tasks(
        database_url,
        [
            dict(
                user_id=chat,
                user_number=1,
                chat_id=chat,
                request_message_id=1,
                input_url=f"https://v.douyin.com/backlog-{chat}/",
                run_id=f"backlog-{chat}",
                state=TaskState.COMPLETED,
                result_text=TEXT,
                text_made_at=moment,
                started_at=moment,
                completed_at=moment,
                progress=100,
                counted=True,
            )
            for chat in chats
        ],
    )


async def draining_backlog(
    telegram: FakeTelegram, coze: FakeCoze, workdir: Path, *, texts: int, rate: float
) -> Figures:
    """`texts` outcomes wait to be sent when the bot starts, against a Bot API that refuses
    calls past 30 in any second; meanwhile `rate` new users a second paste a link each (their
    workflows take 3 s), until the backlog is gone."""
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, duration=3.0)
    waiting = [70_000 + n for n in range(texts)]
    for chat in waiting:
        telegram.meet(chat)
    sections = sections_for(telegram, coze, workdir, "drain")
    await store_settled_outcomes(str(sections["storage"]["database_url"]), waiting)
    stopwatch = Stopwatch()
    telegram.on_message = stopwatch
    refused = telegram.over_limit
    telegram.max_requests_per_second = TELEGRAM_RATE
    newcomers: set[int] = set()
    try:
        async with measured_bot(workdir, "drain", sections):
            started = time.perf_counter()
            backlog = set(waiting)

            def drained() -> bool:
                return backlog <= stopwatch.chats_with_text

            while not drained():
                user = 80_000 + len(newcomers)
                newcomers.add(user)
                stopwatch.paste(telegram, user, f"https://v.douyin.com/drain-{user}/")
                await asyncio.sleep(max(0.0, started + len(newcomers) / rate - time.perf_counter()))
                if time.perf_counter() - started > 600:
                    raise TimeoutError("the backlog did not drain in 600 s")
            drain_seconds = time.perf_counter() - started
            budget = budget_figures(telegram, started, TELEGRAM_RATE)
            await until(lambda: len(stopwatch.texts) >= len(newcomers), 120, "the new texts")
    finally:
        telegram.max_requests_per_second = None
        telegram.on_message = None
    return {
        "backlog": texts,
        "newcomers": len(newcomers),
        "drain_s": drain_seconds,
        **spread("ack", stopwatch.ack_waits(newcomers)),
        **budget,
        "telegram_429": telegram.over_limit - refused,
    }


# --- completion: callbacks against polling Coze's run history --------------------------------


async def completion_mode(
    telegram: FakeTelegram,
    coze: FakeCoze,
    workdir: Path,
    *,
    mode: str,
    links: int,
    longest: float,
    poll_interval: float,
) -> Figures:
    """`links` users paste one link each (workflows of longest/8 to `longest` s); from each
    run's completion to its text reaching Telegram, and what each task cost."""
    durations = random.Random(7)
    coze.outcome_for = lambda url: WorkflowOutcome(
        text=TEXT, duration=durations.uniform(longest / 8, longest)
    )
    first = 30_000 if mode == "callback" else 40_000
    chats = list(range(first, first + links))
    arrived: dict[int, float] = {}  # chat -> when its text reached Telegram (time.time())

    def stamp(message: SentMessage) -> None:
        if not (message.text or "").startswith(ACK_PREFIX):
            arrived.setdefault(message.chat_id, time.time())

    telegram.on_message = stamp
    sections = sections_for(
        telegram,
        coze,
        workdir,
        mode,
        {"coze": {"completion": mode, "poll_interval_seconds": poll_interval}},
    )
    starts, histories = len(coze.runs), coze.history_calls
    try:
        async with measured_bot(workdir, mode, sections) as bot:
            before = await bot.reading()
            for chat in chats:
                telegram.user_sends(chat, f"https://v.douyin.com/{mode}-{chat}/")
            await until(lambda: len(arrived) >= links, longest * 8 + 60, f"the {mode} texts")
            after = await bot.reading()
    finally:
        telegram.on_message = None
    runs = list(coze.runs.values())[starts:]
    waits = [
        arrived[int(run.parameters["url"].rstrip("/").rsplit("-", 1)[1])] - run.updated_at
        for run in runs
    ]
    calls = len(runs) + coze.history_calls - histories
    return {
        "tasks": links,
        **spread("completion_to_text", waits),
        "coze_calls_per_task": calls / links,
        "statements_per_task": (after.statements - before.statements) / links,
        "reads_per_task": (after.reads - before.reads) / links,
        "cpu_ms_per_task": (after.cpu_seconds - before.cpu_seconds) * 1000 / links,
    }


# --- many tasks: memory, database size, CPU -------------------------------------------------


async def many_tasks(
    telegram: FakeTelegram, coze: FakeCoze, workdir: Path, *, tasks: int, rate: float
) -> Figures:
    """`tasks` users paste one link each, `rate` a second, with Telegram's and Coze's limits
    lifted (this measures the bot, not the quotas); workflows take 0.2 s."""
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, duration=0.2)
    stopwatch = Stopwatch()
    telegram.on_message = stopwatch
    sections = sections_for(
        telegram,
        coze,
        workdir,
        "many",
        {
            "telegram": {"max_requests_per_second": 5000.0},
            "coze": {"max_starts_per_second": 5000.0},
            "delivery": {"max_messages_per_second": 5000.0},
        },
    )
    database = Path(str(sections["storage"]["database_url"]).removeprefix("sqlite://"))
    try:
        async with measured_bot(workdir, "many", sections) as bot:
            before = await bot.reading()
            started = time.perf_counter()
            for n in range(tasks):
                stopwatch.paste(telegram, 90_000 + n, f"https://v.douyin.com/many-{n}/")
                if n % 50 == 49:
                    await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            await until(lambda: len(stopwatch.texts) >= tasks, 900, "the texts")
            wall = time.perf_counter() - started
            after = await bot.reading()
            peak = bot.peak_rss_bytes()
    finally:
        telegram.on_message = None
    size = sum(path.stat().st_size for path in database.parent.glob(database.name + "*"))
    return {
        "tasks": tasks,
        "tasks_per_s": tasks / wall,
        "cpu_ms_per_task": (after.cpu_seconds - before.cpu_seconds) * 1000 / tasks,
        "statements_per_task": (after.statements - before.statements) / tasks,
        "peak_rss_mb": peak / 2**20,
        "database_bytes_per_task": size / tasks,
        **spread("ack", stopwatch.ack_waits()),
    }


# --- one user floods, the others are not slowed ------------------------------------------------


async def flood(
    telegram: FakeTelegram, coze: FakeCoze, workdir: Path, *, messages: int, others: int
) -> Figures:
    """With the default limits, one user sends `messages` messages of 3 links as fast as they
    can while `others` users paste one link each, a quarter second apart."""
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, duration=0.2)
    flooder, bystanders = 7, list(range(5000, 5000 + others))
    stopwatch = Stopwatch()
    telegram.on_message = stopwatch
    sections = sections_for(telegram, coze, workdir, "flood")
    sections["limits"] = dict(LimitSettings().model_dump())
    runs_before = len(coze.runs)
    try:
        async with measured_bot(workdir, "flood", sections):

            async def flooding() -> None:
                for n in range(messages):
                    links = " ".join(f"https://v.douyin.com/flood-{3 * n + k}/" for k in range(3))
                    telegram.user_sends(flooder, links)
                    if n % 20 == 19:
                        await asyncio.sleep(0)

            flooding_task = asyncio.create_task(flooding())
            for user in bystanders:
                stopwatch.paste(telegram, user, f"https://v.douyin.com/bystander-{user}/")
                await asyncio.sleep(0.25)
            await flooding_task
            await until(lambda: len(stopwatch.texts) >= others, 60, "the bystanders' texts")
    finally:
        telegram.on_message = None
    flooder_runs = sum(
        1
        for run in list(coze.runs.values())[runs_before:]
        if "flood-" in run.parameters.get("url", "")
    )
    return {
        "flood_messages": messages,
        "others": others,
        **spread("others_ack", stopwatch.ack_waits(set(bystanders))),
        "flooder_runs": flooder_runs,
    }

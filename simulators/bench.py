"""`make bench`: latency, throughput and memory of the whole bot on the simulators.

Three scenarios, in one process (the bot runs in this event loop, as in the tests):
- one user pasting links one after another, pausing a second after each text as a person
  would: the latency a person sees with no contention;
- a burst of many users pasting at once: latencies under Telegram's ~30 messages/s limit,
  which the bot respects (AIORateLimiter), so the burst is paced by design;
- a backlog: many users paste at once against a Bot API that enforces Telegram's ~30/s
  strictly (429 past it in any sliding second): how much of that budget the bot uses while the
  acknowledgements and texts drain, the 429s it gets, and what the users wait;
- completion modes: the same links (workflows of 1 to 8 s by default) with outcomes learnt from the
  workflow's callback, then by polling Coze's run history (`coze.completion = "poll"`, every
  pause twice the last from 5 s): from the run's completion to its text reaching Telegram, and
  the Coze calls per task;
- a flood: with the default limits, one user sends 200 messages of 3 links as fast as they
  can while other users paste one link each, a quarter second apart: the others' latency from
  paste to acknowledgement, and the flooder's runs.

Figures are percentiles of one run; compare runs by ratio, not by absolute seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import LimitSettings, Settings
from bot.runtime import running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.settings import bot_settings
from simulators.telegram import FakeTelegram

TEXT = "这是视频里说的话。This is what the video says. " * 30  # ~1,400 characters


@dataclass
class Stamps:
    sent: dict[tuple[int, int], float] = field(default_factory=dict)  # (chat, message) -> t
    ack: dict[tuple[int, int], float] = field(default_factory=dict)
    text: dict[tuple[int, int], float] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)


async def watch(telegram: FakeTelegram, chats: list[int], stamps: Stamps) -> None:
    """Stamp each bot reply when it reaches the fake Telegram."""
    done = dict.fromkeys(chats, 0)

    def more_than(seen: int) -> bool:
        return sum(len(telegram.messages(chat)) for chat in chats) > seen

    seen = 0
    while True:
        await telegram.wait_for(functools.partial(more_than, seen), timeout=3600)
        now = time.perf_counter()
        for chat in chats:
            messages = telegram.messages(chat)
            for message in messages[done[chat] :]:
                if message.reply_to_message_id is None:
                    continue
                key = (chat, message.reply_to_message_id)
                is_ack = (message.text or "").startswith("Got it!")
                (stamps.ack if is_ack else stamps.text).setdefault(key, now)
            done[chat] = len(messages)
        seen = sum(done.values())
        async with stamps.changed:
            stamps.changed.notify_all()


def _size_of(folder: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in folder.glob(pattern))


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    qs = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered
    p50 = statistics.median(ordered)
    p95 = qs[94] if len(ordered) > 1 else ordered[0]
    return f"p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"


async def scenario(
    name: str,
    telegram: FakeTelegram,
    users: list[int],
    links_per_user: int,
    *,
    sequential: bool,
    timeout: float,
    pause: float = 0.0,
) -> tuple[str, float]:
    stamps = Stamps()
    watcher = asyncio.create_task(watch(telegram, users, stamps))
    started = time.perf_counter()
    expected = len(users) * links_per_user
    try:
        for n in range(links_per_user):
            for user in users:
                message = telegram.user_sends(user, f"看看 https://v.douyin.com/{name}-{user}-{n}/")
                key = (user, int(message["message_id"]))
                stamps.sent[key] = time.perf_counter()
                if sequential:
                    await stamps.until(functools.partial(stamps.text.__contains__, key), timeout)
                    await asyncio.sleep(pause)
        await stamps.until(lambda: len(stamps.text) >= expected, timeout)
    finally:
        watcher.cancel()
    wall = time.perf_counter() - started
    acks = [stamps.ack[k] - t for k, t in stamps.sent.items() if k in stamps.ack]
    texts = [stamps.text[k] - t for k, t in stamps.sent.items() if k in stamps.text]
    report = (
        f"{name}: {expected} links from {len(users)} user(s) in {wall:.2f} s "
        f"({expected / wall:.1f} links/s)\n"
        f"  paste -> acknowledgement  {percentiles(acks)}\n"
        f"  paste -> text             {percentiles(texts)}"
    )
    return report, wall


async def flood(
    telegram: FakeTelegram, coze: FakeCoze, settings: Settings, messages: int, others: int
) -> str:
    """One user floods; `others` users each paste one link meanwhile."""
    flooder, bystanders = 7, list(range(5000, 5000 + others))
    stamps = Stamps()
    watcher = asyncio.create_task(watch(telegram, bystanders, stamps))
    runs_before = len(coze.runs)
    try:
        async with running_bot(settings):

            async def flooding() -> None:
                for n in range(messages):
                    links = " ".join(f"https://v.douyin.com/flood-{3 * n + k}/" for k in range(3))
                    telegram.user_sends(flooder, links)
                    if n % 20 == 19:
                        await asyncio.sleep(0)

            flooding_task = asyncio.create_task(flooding())
            for user in bystanders:
                message = telegram.user_sends(user, f"https://v.douyin.com/bystander-{user}/")
                stamps.sent[(user, int(message["message_id"]))] = time.perf_counter()
                await asyncio.sleep(0.25)
            await flooding_task
            await stamps.until(lambda: len(stamps.text) >= others, 60.0)
    finally:
        watcher.cancel()
    acks = [stamps.ack[k] - t for k, t in stamps.sent.items() if k in stamps.ack]
    flooder_runs = sum(
        1
        for run in list(coze.runs.values())[runs_before:]
        if "flood-" in run.parameters.get("url", "")
    )
    answers = len(telegram.messages(flooder))
    return (
        f"flood: one user sends {messages} messages of 3 links with the default limits, "
        f"{others} other users paste meanwhile\n"
        f"  others' paste -> acknowledgement  {percentiles(acks)}\n"
        f"  the flooder: {flooder_runs} Coze runs started, {answers} answers"
    )


async def completion_mode(
    telegram: FakeTelegram,
    coze: FakeCoze,
    settings: Settings,
    mode: str,
    links: int,
    longest: float,
) -> str:
    """`links` users paste one link each; how long after each run completes its text arrives,
    and how many Coze calls each task cost."""
    chats = (
        list(range(30_000, 30_000 + links))
        if mode == "callback"
        else list(range(40_000, 40_000 + links))
    )
    durations = random.Random(7)
    coze.outcome_for = lambda url: WorkflowOutcome(
        text=TEXT, duration=durations.uniform(longest / 8, longest)
    )
    arrived: dict[str, float] = {}  # link -> when its text reached Telegram (time.time())

    def texts_in() -> bool:
        for chat in chats:
            for message in telegram.messages(chat):
                text = message.text or ""
                if text.startswith("Task #"):
                    arrived.setdefault(f"https://v.douyin.com/{mode}-{chat}/", time.time())
        return len(arrived) >= links

    starts, histories = len(coze.runs), coze.history_calls
    async with running_bot(settings):
        for chat in chats:
            telegram.user_sends(chat, f"https://v.douyin.com/{mode}-{chat}/")
        while not texts_in():
            await telegram.wait_for(lambda: True, timeout=0.02)
            await asyncio.sleep(0.01)
    runs = [run for run in list(coze.runs.values())[starts:]]
    waits = [
        arrived[run.parameters["url"]] - run.updated_at
        for run in runs
        if run.parameters.get("url") in arrived
    ]
    calls = len(runs) + coze.history_calls - histories
    return (
        f"  {mode:<8} completion -> text  {percentiles(waits)}   "
        f"Coze calls per task {calls / links:.2f}"
    )


async def backlog(telegram: FakeTelegram, settings: Settings, users: int, timeout: float) -> str:
    """`users` paste one link each at once; the fake refuses calls past the bot's budget."""
    rate = settings.telegram.max_requests_per_second
    chats = list(range(20_000, 20_000 + users))
    stamps = Stamps()
    telegram.max_requests_per_second = rate
    telegram.counted_calls.clear()
    refused_before = telegram.over_limit
    watcher = asyncio.create_task(watch(telegram, chats, stamps))
    try:
        async with running_bot(settings):
            for user in chats:
                message = telegram.user_sends(user, f"https://v.douyin.com/backlog-{user}/")
                stamps.sent[(user, int(message["message_id"]))] = time.perf_counter()
            await stamps.until(lambda: len(stamps.text) >= users, timeout)
    finally:
        watcher.cancel()
        telegram.max_requests_per_second = None
    calls = sorted(telegram.counted_calls)
    span = calls[-1] - calls[0] if len(calls) > 1 else 0.0
    # Over the whole drain: the first call's second is a full window too.
    used = len(calls) / ((span + 1.0) * rate) if calls else 0.0
    acks = [stamps.ack[k] - t for k, t in stamps.sent.items() if k in stamps.ack]
    texts = [stamps.text[k] - t for k, t in stamps.sent.items() if k in stamps.text]
    return (
        f"backlog: {users} users paste at once; Telegram refuses past {rate:g} calls in any "
        f"second\n"
        f"  {len(calls)} calls in {span + 1.0:.1f} s: {len(calls) / (span + 1.0):.1f}/s, "
        f"{used:.1%} of the budget; 429s: {telegram.over_limit - refused_before}\n"
        f"  paste -> acknowledgement  {percentiles(acks)}\n"
        f"  paste -> text             {percentiles(texts)}"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="link2text-bench-") as workdir:
        telegram = FakeTelegram()
        coze = FakeCoze(callback_timeout=5.0)
        coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, duration=args.workflow_seconds)
        await telegram.start()
        await coze.start()
        settings = Settings.model_validate(
            bot_settings(
                telegram,
                coze,
                Path(workdir),
                callback_secret="bench-callback-secret-0123456789",
                log_level="WARNING",
            )
        )
        raw = bot_settings(
            telegram,
            coze,
            Path(workdir),
            callback_secret="bench-callback-secret-0123456789",
            database_name="flood.sqlite3",
            log_level="WARNING",
        )
        raw["limits"] = LimitSettings().model_dump()
        flood_settings = Settings.model_validate(raw)
        mode_settings = {}
        for mode in ("callback", "poll"):
            raw = bot_settings(
                telegram,
                coze,
                Path(workdir),
                callback_secret="bench-callback-secret-0123456789",
                database_name=f"{mode}.sqlite3",
                log_level="WARNING",
            )
            raw["coze"]["completion"] = mode
            raw["coze"]["poll_interval_seconds"] = args.poll_interval
            mode_settings[mode] = Settings.model_validate(raw)
        backlog_settings = Settings.model_validate(
            bot_settings(
                telegram,
                coze,
                Path(workdir),
                callback_secret="bench-callback-secret-0123456789",
                database_name="backlog.sqlite3",
                log_level="WARNING",
            )
        )
        cpu_before = time.process_time()
        try:
            async with running_bot(settings):
                single, _ = await scenario(
                    "one-user",
                    telegram,
                    [1],
                    args.sequential_links,
                    sequential=True,
                    timeout=args.timeout,
                    pause=args.pause,
                )
                burst, _ = await scenario(
                    "burst",
                    telegram,
                    list(range(1000, 1000 + args.users)),
                    args.links_per_user,
                    sequential=False,
                    timeout=args.timeout,
                )
            cpu = time.process_time() - cpu_before
            runs = len(coze.runs)
            flooded = await flood(
                telegram, coze, flood_settings, args.flood_messages, args.flood_others
            )
            drained = await backlog(telegram, backlog_settings, args.backlog_users, args.timeout)
            modes = [
                await completion_mode(
                    telegram, coze, mode_settings[mode], mode, args.mode_links, args.mode_seconds
                )
                for mode in ("callback", "poll")
            ]
        finally:
            await coze.stop()
            await telegram.stop()
        database = await asyncio.to_thread(_size_of, Path(workdir), "bot.sqlite3*")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tasks = args.sequential_links + args.users * args.links_per_user
    print(f"workflow duration (simulated): {args.workflow_seconds * 1000:.0f} ms per run\n")
    print(single)
    print(burst)
    print(
        f"\nCPU time: {cpu:.2f} s for {tasks} tasks ({cpu / tasks * 1000:.1f} ms per task, "
        f"bot and simulators together)\n"
        f"peak RSS: {peak_kib / 1024:.0f} MiB (whole process)   "
        f"database: {database / 1024:.0f} KiB   Coze runs: {runs}"
    )
    print(f"\n{flooded}")
    print(f"\n{drained}")
    print(
        f"\ncompletion modes: {args.mode_links} links, workflows of {args.mode_seconds / 8:g} to "
        f"{args.mode_seconds:g} s (poll mode: first look {args.poll_interval:g} s after the "
        "start, each pause twice the last)"
    )
    print("\n".join(modes))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.bench", description=__doc__)
    parser.add_argument("--users", type=int, default=50, help="users in the burst")
    parser.add_argument("--links-per-user", type=int, default=2)
    parser.add_argument("--sequential-links", type=int, default=20)
    parser.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="seconds the one user waits after a text before pasting the next link (the bot "
        "paces a chat at about one message per second, as Telegram asks)",
    )
    parser.add_argument("--workflow-seconds", type=float, default=0.2)
    parser.add_argument("--flood-messages", type=int, default=200)
    parser.add_argument("--flood-others", type=int, default=20, help="users pasting meanwhile")
    parser.add_argument("--mode-links", type=int, default=40, help="links per completion mode")
    parser.add_argument("--mode-seconds", type=float, default=8.0, help="the longest workflow")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument(
        "--backlog-users", type=int, default=300, help="users pasting at once in the backlog"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

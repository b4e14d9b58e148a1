"""Callback ingestion, measured on the real bot process over real sockets.

``python -m simulators.callback_bench [--tasks N] [--connections 16 64]``

Tasks whose runs are in flight are stored straight into a fresh SQLite database; the bot
(``python -m simulators.counted_bot``: the real bot, counting its SQL statements) is started
on it against the fake Telegram and Coze. Then every run's
callback is posted once (first outcomes) and then again (duplicates), by `connections`
clients each sending one after another, and the same requests go to a server with the same
JSON and HMAC checks but no database (the ceiling, a subprocess too). Printed for each: the
callbacks per second and the latency percentiles, and the bot process's CPU time and SQL
statements per callback (a first outcome's include sending its text), from one run; compare
by ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from tortoise.timezone import now

from coze import callback_token
from simulators.bench_scenarios import SECRET, TEXT, quantile, sections_for, store_tasks
from simulators.coze import FakeCoze
from simulators.measured_bot import measured_bot
from simulators.soak import free_port
from simulators.telegram import FakeTelegram, SentMessage
from storage import TaskState
from tasks import CallbackReceipt, CallbackReport
from tasks.service import TaskService
from webhook import create_app
from webhook.app import CALLBACK_PATH, TASK_SERVICE


@dataclass
class Posted:
    label: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def errors(self) -> int:
        """Requests not answered 200."""
        return self.count - len(self.latencies)

    def quantile_ms(self, q: float) -> float:
        return quantile(self.latencies, q) * 1000

    def line(self) -> str:
        return (
            f"  {self.label:<34} {self.per_second:8.0f}/s   "
            f"p50 {self.quantile_ms(0.5):6.1f} ms   p99 {self.quantile_ms(0.99):6.1f} ms"
            + (f"   {self.errors} not 200" if self.errors else "")
        )


async def store_running_tasks(database_url: str, count: int) -> list[str]:
    """`count` tasks whose runs are in flight (one per user), stored before the bot starts."""
    run_ids = [f"bench-{n:06d}" for n in range(count)]
    later = now().replace(year=now().year + 1)
    await store_tasks(
        database_url,
        [
            dict(
                user_id=100_000 + n,
                user_number=1,
                chat_id=100_000 + n,
                request_message_id=1,
                input_url=f"https://v.douyin.com/bench-{n}/",
                run_id=run_id,
                state=TaskState.PROCESSING,
                execute_id=f"exec-{n}",
                started_at=now(),
                next_check_at=later,
                expires_at=later,
            )
            for n, run_id in enumerate(run_ids)
        ],
    )
    return run_ids


def callback_body(run_id: str) -> bytes:
    body = {
        "task_id": run_id,
        "token": callback_token(SECRET, run_id),
        "status": "success",
        "text": TEXT,
        "error": "",
        "progress": 100,
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def post_all(url: str, bodies: list[bytes], connections: int, label: str) -> Posted:
    """Each of `connections` clients posts its share, one request after another."""
    latencies: list[float] = []
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            for body in queue:
                started = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        seconds = time.perf_counter() - started
    return Posted(label, len(bodies), seconds, latencies)


# --- the ceiling: the same checks, no database -------------------------------------------


class _NoDatabase:
    """The task service's callback answer without the database: the token check only."""

    def __init__(self) -> None:
        self._checker = TaskService(_NoCoze(), callback_secret=SECRET, max_retries=0,
                                    timeout_seconds=60)  # fmt: skip

    async def handle_callback(self, report: CallbackReport) -> CallbackReceipt:
        if not self._checker.token_is_valid(report.run_id, report.token):
            return CallbackReceipt.BAD_TOKEN
        return CallbackReceipt.ACCEPTED


class _NoCoze:
    async def start(self, link: str, run_id: str) -> Any:
        raise NotImplementedError


async def serve_ceiling(port: int) -> None:
    app = create_app(max_callback_bytes=1_048_576)
    app[TASK_SERVICE] = _NoDatabase()  # type: ignore[misc]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


@asynccontextmanager
async def ceiling_process() -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.callback_bench", "--serve-ceiling", str(port)
    )
    url = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
    try:
        await _until_listening(port)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def _until_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on port {port}")


# --- the run ------------------------------------------------------------------------------


@dataclass
class CallbackRun:
    """One connection count: first outcomes, duplicates and the ceiling, and what the bot
    process spent on them (a first outcome's figures include sending its text)."""

    connections: int
    first: Posted
    duplicate: Posted
    ceiling: Posted
    cpu_ms_first: float
    cpu_ms_duplicate: float
    statements_first: float
    statements_duplicate: float

    def lines(self) -> list[str]:
        return [
            self.first.line()
            + f"   {self.cpu_ms_first:.2f} ms CPU, {self.statements_first:.1f} statements each"
            " (its text sent)",
            self.duplicate.line()
            + f"   {self.cpu_ms_duplicate:.2f} ms CPU, {self.statements_duplicate:.1f} statements"
            " each",
            self.ceiling.line(),
        ]


async def run(tasks: int, connections: list[int]) -> list[str]:
    lines = [f"callbacks: {tasks} runs in flight, each called back once, then again"]
    telegram, coze = FakeTelegram(), FakeCoze()
    await telegram.start()
    await coze.start()
    try:
        with tempfile.TemporaryDirectory(prefix="link2text-callbacks-") as folder:
            for count in connections:
                lines += (await measure(telegram, coze, Path(folder), tasks, count)).lines()
    finally:
        await coze.stop()
        await telegram.stop()
    return lines


async def measure(
    telegram: FakeTelegram, coze: FakeCoze, workdir: Path, tasks: int, connections: int
) -> CallbackRun:
    name = f"callbacks-{connections}"
    sections = sections_for(
        telegram,
        coze,
        workdir,
        name,
        {
            "telegram": {"max_requests_per_second": 5000.0},
            "delivery": {"max_messages_per_second": 5000.0, "per_chat_interval_seconds": 0.0},
        },
    )
    for n in range(tasks):  # the users' chats exist: their texts can be sent
        telegram.meet(100_000 + n)
    run_ids = await store_running_tasks(str(sections["storage"]["database_url"]), tasks)
    bodies = [callback_body(run_id) for run_id in run_ids]
    texts = [0]

    def count(message: SentMessage) -> None:
        texts[0] += 1

    telegram.on_message = count
    try:
        async with measured_bot(workdir, name, sections) as bot:
            url = f"{bot.url}{CALLBACK_PATH}"
            before = await bot.reading()
            first = await post_all(url, bodies, connections, f"{connections} connections, first")
            for _ in range(60_000):  # until every text is sent (at most ten minutes)
                if texts[0] >= tasks:
                    break
                await asyncio.sleep(0.01)
            settled = await bot.reading()
            again = await post_all(
                url, bodies, connections, f"{connections} connections, duplicate"
            )
            after = await bot.reading()
    finally:
        telegram.on_message = None
    async with ceiling_process() as ceiling_url:
        ceiling = await post_all(
            ceiling_url, bodies, connections, f"{connections} connections, no database"
        )
    return CallbackRun(
        connections,
        first,
        again,
        ceiling,
        cpu_ms_first=(settled.cpu_seconds - before.cpu_seconds) * 1000 / tasks,
        cpu_ms_duplicate=(after.cpu_seconds - settled.cpu_seconds) * 1000 / tasks,
        statements_first=(settled.statements - before.statements) / tasks,
        statements_duplicate=(after.statements - settled.statements) / tasks,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.callback_bench")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--serve-ceiling", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ceiling is not None:
        asyncio.run(serve_ceiling(args.serve_ceiling))
        return 0
    for line in asyncio.run(run(args.tasks, args.connections)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

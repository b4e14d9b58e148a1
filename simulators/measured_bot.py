"""The real bot process, measured from outside: CPU time, peak memory, SQL statements.

The benchmark starts ``python -m simulators.counted_bot`` (the bot, counting its statements)
with its own config, waits until ``/readyz`` answers, and reads the process's figures from
``/proc`` (Linux): CPU time is user + system time of the bot process alone, the simulators in
the benchmark's process not included; peak memory is its high-water resident set (VmHWM).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from simulators.counted_bot import DETAIL_ENV, STATEMENTS_FILE_ENV
from simulators.settings import Sections
from simulators.soak import BotProcess, free_port, write_config

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    """The bot process's totals at one moment."""

    cpu_seconds: float
    statements: int
    reads: int  # the statements that were SELECTs


class MeasuredBot:
    def __init__(self, workdir: Path, name: str, sections: Sections) -> None:
        self.port = free_port()
        sections["server"]["port"] = self.port
        self.url = f"http://127.0.0.1:{self.port}"
        self._statements = workdir / f"{name}.statements"
        self._process = BotProcess(
            workdir / f"{name}.toml",
            workdir / f"{name}.log",
            module="simulators.counted_bot",
            environment={STATEMENTS_FILE_ENV: str(self._statements)}
            | ({DETAIL_ENV: "1"} if os.environ.get(DETAIL_ENV) == "1" else {}),
        )
        write_config(self._process.config, sections)

    @property
    def pid(self) -> int:
        process = self._process.process
        assert process is not None, "the bot is not running"
        return process.pid

    async def start(self) -> None:
        await self._process.start()
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if self._process.check():
                    raise RuntimeError(self._failure("the bot exited at start"))
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(self._failure("the bot never became ready"))

    async def stop(self) -> None:
        code = await self._process.stop()
        if code != 0:
            raise RuntimeError(self._failure(f"the bot stopped with {code}"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: utime and stime are the 12th and 13th fields.
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc: not Linux?")

    async def reading(self) -> Reading:
        """CPU time so far, and the SQL statements and reads the bot has run so far (it
        writes the counts when signalled)."""
        cpu = self.cpu_seconds()
        self._statements.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(200):
            try:
                first = self._statements.read_text(encoding="utf-8").split("\n", 1)[0]
                statements, reads = (int(number) for number in first.split())
                return Reading(cpu, statements, reads)
            except (FileNotFoundError, ValueError):
                await asyncio.sleep(0.01)
        raise RuntimeError(self._failure("the bot did not report its statement count"))

    def _failure(self, what: str) -> str:
        return "\n".join([what + "; the end of its log:", *self._process.tail()])


@asynccontextmanager
async def measured_bot(workdir: Path, name: str, sections: Sections) -> AsyncIterator[MeasuredBot]:
    bot = MeasuredBot(workdir, name, sections)
    await bot.start()
    try:
        yield bot
    finally:
        if bot._process.running:
            await bot.stop()

"""`make bench`: the real bot process, over real sockets, against the simulators.

Each scenario starts a bot process of its own (``python -m simulators.counted_bot``, the bot
counting its SQL statements) on a fresh SQLite database, and reads its CPU time and peak
memory from /proc:

- callbacks: 5,000 runs in flight, each called back once (first outcomes) and then again
  (duplicates), by 16 and then 64 clients, beside the same HTTP and HMAC checks with no
  database (the ceiling);
- steady: 20 new users a second paste a link each, against a Bot API that refuses calls past
  30 in any second: the acknowledgement's latency with no backlog;
- drain: 1,000 texts wait to be sent when the bot starts, against that strict Bot API, while 5
  new users a second paste: the acknowledgement's latency, the budget used, the 429s;
- callback and poll: 40 links with workflows of 1 to 8 s, outcomes learnt from the workflow's
  callback, then from polling Coze's run history (`coze.completion = "poll"`): completion ->
  text, and the Coze calls, SQL statements and CPU time per task;
- many: 10,000 users paste a link each, Telegram's and Coze's limits lifted: CPU per task,
  peak RSS, database bytes per task;
- flood: with the default limits, one user sends 200 messages of 3 links while 20 others
  paste: the others' acknowledgement latency.

It prints one table (each figure beside its target) and writes every figure as JSON. Figures
are from one run; compare runs by ratio, not by absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from simulators import bench_scenarios as scenarios
from simulators.bench_report import Results, markdown, rows
from simulators.callback_bench import measure as measure_callbacks
from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram

SCENARIOS = ("callbacks", "steady", "drain", "callback", "poll", "many", "flood")


async def run(args: argparse.Namespace) -> Results:
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="link2text-bench-") as folder:
        workdir = Path(folder)
        for name in args.only or SCENARIOS:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            # Fresh simulators each time: what the last scenario left in them (thousands of
            # messages) would make this process's garbage collection pause, and those pauses
            # would show up as the bot's latency.
            telegram, coze = FakeTelegram(), FakeCoze(callback_timeout=5.0)
            await telegram.start()
            await coze.start()
            try:
                results.update(await _scenario(name, telegram, coze, workdir, args))
            finally:
                await coze.stop()
                await telegram.stop()
            del telegram, coze
            gc.collect()
    return results


async def _scenario(
    name: str, telegram: FakeTelegram, coze: FakeCoze, workdir: Path, args: argparse.Namespace
) -> Results:
    if name == "callbacks":
        out: Results = {}
        for connections in args.connections:
            c = await measure_callbacks(telegram, coze, workdir, args.callback_tasks, connections)
            out[f"callbacks_{connections}"] = {
                "runs": args.callback_tasks,
                **{
                    f"{kind}_{figure}": value
                    for kind, posted in (
                        ("first", c.first),
                        ("duplicate", c.duplicate),
                        ("ceiling", c.ceiling),
                    )
                    for figure, value in (
                        ("per_s", posted.per_second),
                        ("p50_ms", posted.quantile_ms(0.5)),
                        ("p99_ms", posted.quantile_ms(0.99)),
                        ("not_200", posted.errors),
                    )
                },
                "cpu_ms_first": c.cpu_ms_first,
                "cpu_ms_duplicate": c.cpu_ms_duplicate,
                "statements_first": c.statements_first,
                "statements_duplicate": c.statements_duplicate,
            }
        return out
    if name == "steady":
        figures = await scenarios.steady_users(
            telegram, coze, workdir, rate=args.users_per_second, seconds=args.steady_seconds
        )
    elif name == "drain":
        figures = await scenarios.draining_backlog(
            telegram, coze, workdir, texts=args.backlog_texts, rate=args.drain_users_per_second
        )
    elif name in ("callback", "poll"):
        figures = await scenarios.completion_mode(
            telegram,
            coze,
            workdir,
            mode=name,
            links=args.mode_links,
            longest=args.mode_seconds,
            poll_interval=args.poll_interval,
        )
    elif name == "many":
        figures = await scenarios.many_tasks(
            telegram, coze, workdir, tasks=args.tasks, rate=args.tasks_per_second
        )
    else:
        figures = await scenarios.flood(
            telegram, coze, workdir, messages=args.flood_messages, others=args.flood_others
        )
    return {name: figures}


def _about() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "database": "sqlite",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run these scenarios only")
    parser.add_argument("--callback-tasks", type=int, default=5000)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--users-per-second", type=float, default=20.0)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--backlog-texts", type=int, default=1000)
    parser.add_argument("--drain-users-per-second", type=float, default=5.0)
    parser.add_argument("--mode-links", type=int, default=40)
    parser.add_argument("--mode-seconds", type=float, default=8.0, help="the longest workflow")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--tasks-per-second", type=float, default=200.0)
    parser.add_argument("--flood-messages", type=int, default=200)
    parser.add_argument("--flood-others", type=int, default=20)
    parser.add_argument(
        "--json", type=Path, default=Path("bench-results.json"), help="where the figures go"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(run(args))
    args.json.write_text(
        json.dumps(
            {
                "about": _about(),
                "arguments": vars(args) | {"json": str(args.json)},
                "results": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(markdown(rows(results)))
    print(f"\nevery figure: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

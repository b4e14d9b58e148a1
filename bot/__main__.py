"""`python -m bot --config PATH`: run the bot until SIGTERM or SIGINT.

`python -m bot migrate --config PATH`: apply the database migrations and exit (the bot also
applies them at start; this lets a deployment do it once, before starting instances).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.runtime import StartupError, running_bot, secrets_of
from storage import DatabaseOpenError, open_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "migrate"),
        default="run",
        help="run the bot (the default), or apply the migrations and exit",
    )
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="TOML file")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, secrets_of(settings), settings.logging.format)
    if args.command == "migrate":
        try:
            asyncio.run(migrate(settings))
        except DatabaseOpenError as exc:
            print(f"start-up error: storage.database_url: cannot open the database ({exc})",
                  file=sys.stderr)  # fmt: skip
            return 2
        print("the database schema is up to date")
        return 0
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"start-up error: {exc}", file=sys.stderr)
        return 2
    return 0


async def migrate(settings: Settings) -> None:
    """Opening the database applies the migrations it lacks."""
    async with open_database(settings.storage.database_url):
        pass


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_bot(settings) as running:
        logging.getLogger("bot").info("bot running; SIGTERM or Ctrl-C stops it")
        await stop.wait()
        running.stopping()
        logging.getLogger("bot").info("stopping")


if __name__ == "__main__":
    sys.exit(main())

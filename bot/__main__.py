"""`python -m bot --config PATH`: run the bot until SIGTERM or SIGINT."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config.toml"), help="TOML file")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.logging.level, secrets_of(settings))
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"start-up error: {exc}", file=sys.stderr)
        return 2
    return 0


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_bot(settings):
        logging.getLogger("bot").info("bot running; SIGTERM or Ctrl-C stops it")
        await stop.wait()
        logging.getLogger("bot").info("stopping")


if __name__ == "__main__":
    sys.exit(main())

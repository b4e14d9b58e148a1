"""What the web server logs about bad requests: one short line each, never their bytes.

aiohttp's request handler logs a malformed request ("Error handling request from ...") at ERROR
with a traceback, and a parse error's message quotes the raw bytes it choked on. The webhook
gives aiohttp a logger of its own, `webhook.http`, whose filter turns such a record into one
INFO line naming the peer and the kind of error, and drops the follow-up records aiohttp writes
about a request already answered. A server fault (anything not caused by the client) keeps its
traceback.

`Tally` logs events that come in floods (connections dropped, evicted) as one line per period.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.http import HttpProcessingError

HTTP_LOG = logging.getLogger("webhook.http")

# What a client can cause: bad HTTP, a broken body, a connection gone mid-request.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    HttpProcessingError,
    web.RequestPayloadError,
    ConnectionError,
)


class ShortClientErrors(logging.Filter):
    """On `webhook.http`: a client's error becomes one line with no traceback and no bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, CLIENT_ERRORS):
            return True
        if not str(record.msg).startswith("Error handling request"):
            # e.g. "Unhandled exception" from the rest of a body read after the answer.
            return False
        level = min(record.levelno, logging.INFO)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        remote = args[0] if args else None
        record.msg = "bad HTTP request from %s: %s"
        record.args = (remote or "?", type(error).__name__)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.levelno = level
        record.levelname = logging.getLevelName(level)
        return True


if not any(isinstance(f, ShortClientErrors) for f in HTTP_LOG.filters):
    HTTP_LOG.addFilter(ShortClientErrors())


class Tally:
    """Counts an event; logs the first at once, then at most one summary line per period."""

    def __init__(self, logger: logging.Logger, message: str, period: float = 60.0) -> None:
        self._logger = logger
        self._message = message  # one %d: how many
        self._period = period
        self._unlogged = 0
        self._quiet_until = 0.0
        self._flush: asyncio.TimerHandle | None = None
        self.total = 0

    def add(self) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now >= self._quiet_until:
            self._log(now)
        elif self._flush is None:
            delay = self._quiet_until - now
            self._flush = asyncio.get_running_loop().call_later(delay, self._log_later)

    def _log_later(self) -> None:
        self._flush = None
        if self._unlogged:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        self._logger.info(self._message, self._unlogged)
        self._unlogged = 0
        self._quiet_until = now + self._period

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

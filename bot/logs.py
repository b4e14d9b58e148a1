"""Logging set-up: secrets are masked in every record, every message stays on one line, chatty
HTTP loggers are quieted, and asyncio's accept() errors come once a minute at most."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

from tasks.log_context import TaskContext

# C0 (but tab) and C1 control characters, DEL, and the Unicode line and paragraph separators:
# anything that could end a log line early or rewrite it on a terminal.
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
ACCEPT_FAILED = "socket.accept() out of system resource"


class RedactSecrets(logging.Filter):
    """Replace every known secret in a record's final message with '***'."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            for secret in self._secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
        return True


class OneLine(logging.Filter):
    """Escape control characters (newlines, NUL, ESC...) in a record's message, so that text
    from outside (a link, a workflow's error) can never forge or break a log line. A
    traceback, when there is one, still follows on lines of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = message.translate(_ESCAPES)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


class ThrottleAcceptErrors(logging.Filter):
    """On the asyncio logger: "socket.accept() out of system resource" (EMFILE, the open-file
    limit reached) is logged by the event loop for every attempt, with a traceback, up to a
    backlog's worth of times per second. Let one short line through per `period` seconds,
    saying how many were held back."""

    def __init__(self, period: float = 60.0) -> None:
        super().__init__()
        self._period = period
        self._quiet_until = float("-inf")
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_FAILED):
            return True
        now = time.monotonic()
        if now < self._quiet_until:
            self._held_back += 1
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = "cannot accept connections: %s%s"
        held_back = f" ({self._held_back} more since the last such line)" if self._held_back else ""
        record.args = (error or "out of system resource", held_back)
        record.exc_info = record.exc_text = None
        self._held_back = 0
        self._quiet_until = now + self._period
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("task_id", "run_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, secrets: tuple[str, ...], log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TaskContext())
    handler.addFilter(RedactSecrets(secrets))
    handler.addFilter(OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx (Coze's client, cozepy) logs every request URL at INFO; Telegram's URLs hold the bot
    # token, and would too if a transport that logs them were ever used again.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # cozepy installs a handler of its own that bypasses ours (and its masking): route it here.
    cozepy_logger = logging.getLogger("cozepy")
    cozepy_logger.handlers.clear()
    cozepy_logger.propagate = True
    asyncio_logger = logging.getLogger("asyncio")
    for old in [f for f in asyncio_logger.filters if isinstance(f, ThrottleAcceptErrors)]:
        asyncio_logger.removeFilter(old)
    asyncio_logger.addFilter(ThrottleAcceptErrors())

"""The Telegram side: handlers, delivery of outcomes, configuration and the composition root."""

import os

# PTB 22 reports time periods (RetryAfter.retry_after) as int seconds with a deprecation
# warning on every read, and as datetime.timedelta once opted in; the bot reads either (see
# bot.delivery), so take the future form now and keep the log free of the warning.
os.environ.setdefault("PTB_TIMEDELTA", "1")

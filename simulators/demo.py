"""The whole bot, end to end, on local simulators: ``python -m simulators.demo`` (``make demo``).

It starts the fake Telegram and the fake Coze in this process, writes a config file pointing at
them in a temporary directory, and runs the real bot as a subprocess (``python -m bot --config
FILE``). Then it plays one user: /start, a pasted Douyin share text, the Retry button under the
text, a link whose callback is lost, /tasks; then a second user whose Telegram is in Chinese:
/start, and the same video shared again (answered from the earlier text, no Coze run); last,
/find. It prints the conversation as it happens. No credentials, no network beyond 127.0.0.1.

Exit status 0 when every step got its answer; 1 when one did not (a wait timed out, the bot
process died), with what went wrong and the tail of the bot's log. Either way, and on Ctrl-C or
SIGTERM too, the bot process is stopped (SIGTERM, then SIGKILL), the simulators are stopped and
the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.config import SECRET_ENV
from simulators.coze import FakeCoze, default_outcome_for
from simulators.settings import bot_settings, to_toml
from simulators.telegram import FakeTelegram, SentMessage

PROJECT_ROOT = Path(__file__).resolve().parent.parent
USER_ID = 1001
# A second user, whose Telegram app is in Chinese, pastes the same video later.
CHINESE_USER_ID = 1002
CHINESE_USER_NAME = "李雷"
SHARE_TEXT = (
    "7.43 复制打开抖音，看看【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/ Mwz:/ 09/27"
)
VIDEO_URL = "https://v.douyin.com/iRNBho6u/"
# The same video shared again, with tracking parameters: answered from the earlier text.
SHARE_TEXT_AGAIN = (
    "【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/?utm_source=copy&share_source=wechat"
    " 复制此链接，打开抖音搜索，直接观看视频！"
)
REFRESH_LABEL_ZH = "重新提取"
FIND_WORDS = "视频"  # every transcript of the fake Coze starts with "视频链接"
# A second video whose workflow never calls back (the fake Coze's "lost" marker).
LOST_CALLBACK_URL = "https://v.douyin.com/lost-callback/"
RECONCILE_AFTER_SECONDS = 1.0
RETRY_LABEL = "Retry"

DEFAULT_TIMEOUT = 20.0  # seconds one step may wait for the bot
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL_LINES = 40
SHOWN_LINES = 4  # a longer text is cut after this many lines
SHOWN_CHARS = 400  # ... or this many characters
LINE_WIDTH = 96
MAX_PROBLEMS = 5  # warnings and errors of the bot's log listed in the summary
QUOTE_WIDTH = 36


def _any(message: SentMessage) -> bool:
    return True


class DemoFailure(Exception):
    """A step of the demo did not happen; the message says which."""


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _quote(text: str | None) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return '"' + _cut(first, QUOTE_WIDTH) + '"'


def shorten(text: str) -> list[str]:
    """The lines to show of a message: a long one is cut after a few lines (blank lines kept,
    not counted) or characters, ending with '... (N characters)'."""
    lines = text.splitlines() or [""]
    shown: list[str] = []
    counted = used = 0
    for line in lines:
        if counted >= SHOWN_LINES or used >= SHOWN_CHARS:
            break
        shown.append(_cut(line, LINE_WIDTH))
        counted += bool(line.strip())
        used += len(line) + 1
    while len(shown) > 1 and not shown[-1].strip():
        shown.pop()
    if shown != lines:
        shown.append(f"... ({len(text)} characters)")
    return shown


class Transcript:
    """Timestamped lines on stdout: ``[ 0.42s] bot: text``, later lines indented under it."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def line(self, who: str, lines: list[str]) -> None:
        head = f"[{self.elapsed():5.2f}s] {who}: " if who else f"[{self.elapsed():5.2f}s] "
        indent = " " * len(head)
        print(head + (lines[0] if lines else ""), flush=True)
        for more in lines[1:]:
            print((indent + more).rstrip(), flush=True)

    def note(self, text: str) -> None:
        self.line("", [f"-- {text}"])


# --------------------------------------------------------------------------------------------
# The chat, as the user sees it
# --------------------------------------------------------------------------------------------


def _buttons(message: SentMessage) -> tuple[str, ...]:
    return tuple(label for label, _ in message.buttons())


class Chat:
    """One user's private chat with the bot: what the user does, and everything the bot does
    in it (new messages, edits, deletions, answers to button presses) printed once, in order."""

    def __init__(
        self,
        telegram: FakeTelegram,
        transcript: Transcript,
        user_id: int,
        *,
        name: str = "you",
        language_code: str | None = None,
    ) -> None:
        self._telegram = telegram
        self._transcript = transcript
        self._user_id = user_id
        self._name = name  # how the user's lines are labelled
        self._bot_label = "bot" if name == "you" else f"bot (to {name})"
        self._language_code = language_code
        self._texts: dict[int, str] = {}  # message id -> text, both sides, for reply targets
        self._shown: dict[int, tuple[str | None, tuple[str, ...]]] = {}  # bot messages as shown
        self._queries: dict[str, bool] = {}  # query id -> its answer was shown
        self.first_seen: dict[int, float] = {}  # bot message id -> elapsed time it was seen

    @property
    def messages(self) -> list[SentMessage]:
        return self._telegram.messages(self._user_id)

    def send(self, text: str) -> int:
        self.record_news()
        self._transcript.line(self._name, shorten(text))
        message = self._telegram.user_sends(
            self._user_id, text, first_name="Demo", language_code=self._language_code
        )
        message_id = int(message["message_id"])
        self._texts[message_id] = text
        return message_id

    def press(self, message: SentMessage, label: str) -> str:
        self.record_news()
        (data,) = [data for text, data in message.buttons() if text == label]
        self._transcript.line(self._name, [f"(presses [{label}] under {_quote(message.text)})"])
        query_id = self._telegram.user_presses(self._user_id, message, data)
        self._queries[query_id] = False
        return query_id

    def answer_to(self, query_id: str) -> str | None:
        answer = self._telegram.callback_answers.get(query_id)
        return None if answer is None else str(answer.get("text") or "")

    def has_news(self) -> bool:
        current = {m.message_id: (m.text, _buttons(m)) for m in self.messages}
        answered = self._telegram.callback_answers
        return current != self._shown or any(
            not shown and query in answered for query, shown in self._queries.items()
        )

    def record_news(self) -> None:
        """Print whatever the bot did since the last call."""
        messages = self.messages
        present = {message.message_id for message in messages}
        for message in messages:
            state = (message.text, _buttons(message))
            before = self._shown.get(message.message_id)
            if before is None:
                self.first_seen[message.message_id] = self._transcript.elapsed()
                self._texts[message.message_id] = message.text or ""
                self._transcript.line(self._bot_label, self._describe(message))
            elif before != state:
                self._transcript.line(self._bot_label, self._describe_edit(message, before))
            self._shown[message.message_id] = state
        for message_id in [known for known in self._shown if known not in present]:
            self._transcript.line(
                self._bot_label, [f"(deletes {_quote(self._texts.get(message_id))})"]
            )
            del self._shown[message_id]
        for query_id, shown in self._queries.items():
            answer = self._telegram.callback_answers.get(query_id)
            if shown or answer is None:
                continue
            kind = "alert" if answer.get("show_alert") else "toast"
            text = str(answer.get("text") or "")
            self._transcript.line(
                self._bot_label, [f"({kind}) {text}" if text else f"({kind}, empty)"]
            )
            self._queries[query_id] = True

    def _describe(self, message: SentMessage) -> list[str]:
        lines: list[str] = []
        if message.document is not None:
            name = message.filename or "file"
            lines.append(f"[document {name}, {len(message.document)} bytes]")
        lines.extend(shorten(message.text or ""))
        buttons = _buttons(message)
        if buttons:
            lines.append(" ".join(f"[{label}]" for label in buttons))
        target = message.reply_to_message_id
        if target is not None:
            whose = "your" if target not in self._shown else "its"
            lines.append(f"(in reply to {whose} message {_quote(self._texts.get(target))})")
        return lines

    def _describe_edit(
        self, message: SentMessage, before: tuple[str | None, tuple[str, ...]]
    ) -> list[str]:
        old_text, _ = before
        what = f"(edits {_quote(old_text)}:"
        if message.text != old_text:
            return [f"{what} new text)", *shorten(message.text or "")]
        buttons = _buttons(message)
        if not buttons:
            return [f"{what} removes the buttons)"]
        return [f"{what} buttons now " + " ".join(f"[{label}]" for label in buttons) + ")"]


# --------------------------------------------------------------------------------------------
# The bot process
# --------------------------------------------------------------------------------------------


def bot_config(telegram: FakeTelegram, coze: FakeCoze, workdir: Path, callback_secret: str) -> str:
    """The bot's config TOML for these simulators; the database lives in `workdir`."""
    # DEBUG, so the check that no secret reaches the log sees everything.
    return to_toml(
        bot_settings(
            telegram,
            coze,
            workdir,
            callback_secret=callback_secret,
            database_name="demo.sqlite3",
            log_level="DEBUG",
        )
        | {
            "tasks": {
                "reconcile_after_seconds": RECONCILE_AFTER_SECONDS,
                "scan_interval_seconds": 0.2,
            }
        }
    )


def _bot_environment() -> dict[str, str]:
    # Secrets in the environment override the config file: never hand real ones to the demo.
    env = {name: value for name, value in os.environ.items() if name not in SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc})"]
    return text.splitlines()[-lines:] or ["(empty)"]


def _is_problem(log_line: str) -> bool:
    return any(mark in log_line for mark in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback"))


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Seconds from the user's action to the bot's message, as seen by the user."""

    acknowledgement: float  # paste -> acknowledgement
    text: float  # paste -> the text
    retried_text: float  # Retry pressed -> the new text
    reused_text: float  # a known video pasted -> the earlier text
    lost_callback_text: float  # paste -> the text, when the workflow never calls back


class Demo:
    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._timeout = timeout
        self._transcript = Transcript()
        self._telegram = FakeTelegram()
        self._coze = FakeCoze()
        self._chat = Chat(self._telegram, self._transcript, USER_ID)
        self._chinese_chat = Chat(
            self._telegram,
            self._transcript,
            CHINESE_USER_ID,
            name=CHINESE_USER_NAME,
            language_code="zh-hans",
        )
        self._workdir = Path(tempfile.mkdtemp(prefix="link2text-demo-"))
        self._log_path = self._workdir / "bot.log"
        self._callback_secret = "demo-callback-secret-" + os.urandom(8).hex()
        self._bot: asyncio.subprocess.Process | None = None
        self._bot_stopped = ""  # how the bot process ended, once stopped
        self._bot_log: list[str] = []  # its whole log, read before the directory goes

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        """Play the conversation; 0 on success, 1 on failure. Always cleans up."""
        try:
            await self._start()
            timings = await self._play()
        except DemoFailure as exc:
            self._report_failure(str(exc))
            return 1
        except Exception:
            self._report_failure("the demo itself failed:\n" + traceback.format_exc().rstrip())
            return 1
        finally:
            await self._shutdown()
        self._print_summary(timings)
        if self._secrets_in_log():
            print("\nDEMO FAILED: a secret appeared in the bot's log", file=sys.stderr)
            return 1
        return 0

    def _secrets_in_log(self) -> int:
        secrets = (self._telegram.token, self._coze.token, self._callback_secret)
        return sum(secret in line for line in self._bot_log for secret in secrets)

    async def _start(self) -> None:
        await self._telegram.start()
        await self._coze.start()
        config = self._workdir / "config.toml"
        config.write_text(
            bot_config(self._telegram, self._coze, self._workdir, self._callback_secret),
            encoding="utf-8",
        )
        with self._log_path.open("wb") as log:
            self._bot = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "--config",
                str(config),
                cwd=PROJECT_ROOT,
                env=_bot_environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._transcript.note(
            f"bot process {self._bot.pid} started: python -m bot --config {config}"
        )

    async def _shutdown(self) -> None:
        self._chat.record_news()
        await self._stop_bot()
        if self._bot is not None:
            self._bot_log = _tail(self._log_path, lines=100_000)
        await self._coze.stop()
        await self._telegram.stop()
        self.remove_workdir()

    async def _stop_bot(self) -> None:
        bot = self._bot
        if bot is None:
            return
        if bot.returncode is not None:
            self._bot_stopped = f"had exited by itself (code {bot.returncode})"
            return
        asked = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            bot.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE):
                code = await bot.wait()
            took = time.monotonic() - asked
            self._bot_stopped = f"stopped on SIGTERM in {took:.2f} s (exit code {code})"
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                bot.kill()
            await bot.wait()
            self._bot_stopped = f"did not stop within {STOP_GRACE:g} s of SIGTERM; killed"

    def kill_leftovers(self) -> None:
        """Last resort after the event loop is gone (a second Ctrl-C): SIGKILL, no waiting."""
        bot = self._bot
        if bot is not None and bot.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(bot.pid, signal.SIGKILL)
        self.remove_workdir()

    def remove_workdir(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _print_summary(self, timings: Timings) -> None:
        def ms(seconds: float) -> str:
            return f"{seconds * 1000:6.0f} ms"

        problems = [line for line in self._bot_log if _is_problem(line)]
        warnings = sum(" WARNING " in line for line in problems)
        lines = [
            "",
            "Summary",
            f"  paste -> acknowledgement: {ms(timings.acknowledgement)}",
            f"  paste -> text:            {ms(timings.text)}",
            f"  Retry -> new text:        {ms(timings.retried_text)}",
            f"  known video -> text:      {ms(timings.reused_text)} (no Coze run)",
            f"  callback lost -> text:    {ms(timings.lost_callback_text)}"
            f" (run history asked after {RECONCILE_AFTER_SECONDS:.0f} s)",
            f"  Coze runs:                {len(self._coze.runs):6d}",
            f"  whole demo:               {self._transcript.elapsed():6.2f} s",
            f"  bot process:              {self._bot_stopped}",
            f"  bot log:                  {warnings} warning(s), "
            f"{len(problems) - warnings} error(s) or traceback(s), "
            f"{len(self._bot_log)} line(s) at DEBUG",
            f"  secrets in bot log:       {self._secrets_in_log() or 'none'}",
        ]
        lines.extend("    " + _cut(line, LINE_WIDTH + 20) for line in problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"    ... and {len(problems) - MAX_PROBLEMS} more")
        print("\n".join(lines), flush=True)

    def _report_failure(self, what: str) -> None:
        print(f"\nDEMO FAILED: {what}", file=sys.stderr)
        if self._bot is not None:
            state = "running" if self._bot.returncode is None else f"exit {self._bot.returncode}"
            print(f"\nlast lines of the bot's log ({state}):", file=sys.stderr)
            for line in _tail(self._log_path):
                print("  " + line, file=sys.stderr)
        sys.stderr.flush()

    # ---- waiting --------------------------------------------------------------------------

    async def _until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait until `condition()`, printing what the bot does meanwhile; DemoFailure when the
        bot process exits or the timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        chats = (self._chat, self._chinese_chat)
        while True:
            for chat in chats:
                chat.record_news()
            if condition():
                return
            if self._bot is not None and self._bot.returncode is not None:
                raise DemoFailure(
                    f"the bot process exited (code {self._bot.returncode}) while waiting for {what}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DemoFailure(f"no {what} within {self._timeout:g} s")
            # Woken by every change in the fake Telegram; also every 0.1 s to check the process
            # and the things the fake does not announce (such as a getUpdates call).
            with contextlib.suppress(TimeoutError):
                await self._telegram.wait_for(
                    lambda: any(chat.has_news() for chat in chats) or condition(),
                    min(0.1, remaining),
                )

    async def _next_message(
        self,
        what: str,
        after: int,
        match: Callable[[SentMessage], bool],
        chat: Chat | None = None,
    ) -> SentMessage:
        """The first bot message sent after message `after` that `match`es (in `chat`, by
        default the first user's)."""
        found: list[SentMessage] = []
        chat = chat or self._chat

        def arrived() -> bool:
            found[:] = [m for m in chat.messages if m.message_id > after and match(m)]
            return bool(found)

        await self._until(what, arrived)
        return found[0]

    # ---- the conversation -----------------------------------------------------------------

    async def _play(self) -> Timings:
        chat, telegram = self._chat, self._telegram
        await self._until(
            "sign of life from the bot (a getUpdates call)",
            lambda: bool(telegram.calls_of("getUpdates")),
        )
        self._transcript.note("the bot is polling for updates")

        start_id = chat.send("/start")
        await self._next_message("answer to /start", start_id, lambda m: True)

        paste_id = chat.send(SHARE_TEXT)
        pasted_at = self._transcript.elapsed()
        ack = await self._next_message(
            "acknowledgement of the link",
            paste_id,
            lambda m: m.reply_to_message_id == paste_id and not m.buttons(),
        )
        text = await self._next_message(
            "text of the video", paste_id, lambda m: RETRY_LABEL in _buttons(m)
        )
        self._check_text(text)
        if text.message_id < ack.message_id:
            self._transcript.note("odd: the text arrived before the acknowledgement")

        query_id = chat.press(text, RETRY_LABEL)
        pressed_at = self._transcript.elapsed()
        await self._until("answer to the Retry press", lambda: chat.answer_to(query_id) is not None)
        again = await self._next_message(
            "text of the retried task", text.message_id, lambda m: RETRY_LABEL in _buttons(m)
        )
        self._check_text(again)

        lost_id = chat.send(f"This one's workflow never calls back: {LOST_CALLBACK_URL}")
        lost_at = self._transcript.elapsed()
        self._transcript.note(
            f"(the demo asks Coze's run history after {RECONCILE_AFTER_SECONDS:.0f} s of "
            "silence; the default is 120 s)"
        )
        recovered = await self._next_message(
            "text of the run whose callback was lost",
            lost_id,
            lambda m: RETRY_LABEL in _buttons(m) and m.reply_to_message_id == lost_id,
        )
        if default_outcome_for(LOST_CALLBACK_URL).text.splitlines()[0] not in (
            recovered.text or ""
        ):
            raise DemoFailure(f"the recovered message is not the video's text: {recovered.text!r}")

        tasks_id = chat.send("/tasks")
        await self._next_message("answer to /tasks", tasks_id, lambda m: True)

        # Another user, whose Telegram app is in Chinese, shares the same video: the text of
        # the earlier extraction comes at once, in Chinese, with no Coze run.
        chinese = self._chinese_chat
        chinese_start = chinese.send("/start")
        await self._next_message("answer to /start in Chinese", chinese_start, _any, chinese)
        runs_before = len(self._coze.runs)
        again_id = chinese.send(SHARE_TEXT_AGAIN)
        reused_at = self._transcript.elapsed()
        reused = await self._next_message(
            "the text of the earlier extraction",
            again_id,
            lambda m: REFRESH_LABEL_ZH in _buttons(m),
            chinese,
        )
        if len(self._coze.runs) != runs_before:
            raise DemoFailure("a video extracted a minute ago started a new Coze run")

        find_id = chat.send(f"/find {FIND_WORDS}")
        await self._next_message("answer to /find", find_id, _any)
        chat.record_news()

        seen = chat.first_seen
        return Timings(
            acknowledgement=seen[ack.message_id] - pasted_at,
            text=seen[text.message_id] - pasted_at,
            retried_text=seen[again.message_id] - pressed_at,
            lost_callback_text=seen[recovered.message_id] - lost_at,
            reused_text=chinese.first_seen[reused.message_id] - reused_at,
        )

    def _check_text(self, message: SentMessage) -> None:
        expected = default_outcome_for(VIDEO_URL).text.strip().splitlines()[0]
        if expected not in (message.text or ""):
            raise DemoFailure(
                f"the message with the Retry button is not the video's text: {message.text!r}"
            )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


async def _main(demo: Demo) -> int:
    # SIGTERM cleans up like Ctrl-C does: cancel this task, and let the finally blocks run.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await demo.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.demo", description=__doc__)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each answer of the bot (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")  # Chinese text on a non-UTF-8 terminal
    demo = Demo(timeout=args.timeout)
    try:
        return asyncio.run(_main(demo))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; the bot and the simulators were stopped", file=sys.stderr)
        return 130
    finally:
        demo.kill_leftovers()


if __name__ == "__main__":
    sys.exit(main())

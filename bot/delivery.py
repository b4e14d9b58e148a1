"""The delivery loop: sends stored outcomes to Telegram, then marks them delivered (an outbox).

It wakes at once when something is stored for sending and also scans on a timer, so an outcome
stored before a restart is sent after it. Each chat has its own worker, so one slow or throttled
chat never holds up another, and one chat's outcomes keep their order. Sends are paced below
Telegram's limits: every send takes its place in the bot's one budget (bot.budget, through the
rate limiter), after acknowledgements and before progress edits; texts are also capped at
`messages_per_second`, and one message per `per_chat_interval` in a chat (after a short burst).
Progress edits wait while texts do.

What each Telegram answer means here (shared/docs/telegram.md):
- RetryAfter: the chat waits the time asked (every chat, when several chats are asked to wait
  at once: bot.pauses), then the same payload is sent again; other chats go on;
- Forbidden: the user blocked the bot: the outcome is undeliverable after this one try;
- TimedOut: Telegram may have delivered it: recorded as possibly delivered, not resent;
- BadRequest: the payload changes (no reply, a document, smaller pieces), never resent as is;
- other network faults: tried again later, each pause twice the last, then given up.
A long text is sent piece by piece and each piece is recorded, so nothing is sent twice when a
delivery resumes after a failure or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import ExtBot
from tortoise.timezone import now

from bot import buttons
from bot.languages import Languages
from bot.pauses import Pauses
from bot.ratelimit import NO_RETRIES, PROGRESS_EDIT
from bot.splitting import CAPTION_LIMIT, preview, split_text, utf16_len
from bot.texts import Texts, number_of
from storage import Task, TaskState
from tasks import FailureKind, TaskService
from tasks.log_context import about
from tasks.reconciler import rate_limiter

log = logging.getLogger(__name__)

BATCH = 100
# The least time between two scans of the outbox (an idle loop scans at once when woken).
MIN_SCAN_GAP = 0.02
# Chats served at once; more wait for the next scan.
MAX_CHAT_WORKERS = 64
# RetryAfter answers waited out within one delivery before it goes back to the queue.
MAX_WAITS_PER_DELIVERY = 5
# Payload levels after BadRequest: 0 as planned, 1 and 2 changed payloads, then given up.
LAST_PAYLOAD_LEVEL = 2
SMALL_PIECE = 1000  # UTF-16 units per message at the last payload level
MAX_BACKOFF_SECONDS = 300.0
PROGRESS_BATCH = 20
# A workflow's own failure reason is shown only when it reads like a sentence, not a dump.
_REASON_MAX = 160
_NOT_FOR_USERS = re.compile(
    r"traceback|exception|stack|token|secret|password|File \"|code|errno|\d{5,}|[{}\[\]<>=]"
    # Nothing a user could follow: no link, domain name or @handle (a workflow's message is
    # not ours to vouch for), and no control or bidirectional formatting characters, which
    # can make text read differently from what it is.
    r"|://|www\.|\w\.[a-z]{2,}\b|@\w"
    r"|[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]",
    re.I,
)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_text_messages: int = 3
    scan_interval: float = 5.0
    messages_per_second: float = 30.0
    per_chat_interval: float = 1.0
    per_chat_burst: int = 3
    retry_backoff: float = 2.0
    max_attempts: int = 12
    progress_edit_interval: float = 5.0


class ChatPacer:
    """One message per `interval` seconds per chat on average, with bursts of up to `burst`.

    Telegram asks for about one message per second in a chat and lets short bursts through, so
    a text of three pieces goes out at once while a chat that keeps getting messages is paced.
    (The generic cell rate algorithm: one "theoretical arrival time" per chat.)
    """

    def __init__(self, interval: float, burst: int) -> None:
        self._interval = interval
        self._tolerance = interval * (burst - 1)
        self._next: dict[int, float] = {}

    def wait(self, chat_id: int, moment: float) -> float:
        """Seconds until the chat may take a message (0 or less: now)."""
        return self._next.get(chat_id, moment) - self._tolerance - moment

    def take(self, chat_id: int, moment: float) -> None:
        self._next[chat_id] = max(self._next.get(chat_id, moment), moment) + self._interval
        if len(self._next) > 10_000:  # forget chats that are free again
            self._next = {chat: due for chat, due in self._next.items() if due > moment}


class _Stopping(Exception):
    """The loop is stopping: leave the rest of this outcome for the next start."""


Send = Callable[[], Awaitable[object]]


class DeliveryLoop:
    def __init__(
        self,
        bot: ExtBot[Any],
        service: TaskService,
        policy: DeliveryPolicy,
        *,
        pauses: Pauses,
        languages: Languages,
        secrets: tuple[str, ...] = (),
    ) -> None:
        """`pauses` must be the registry of the bot's rate limiter (bot.ratelimit.pauses_of):
        the limiter records every 429 there, and replies and deliveries respect the same pauses.
        """
        self._bot = bot
        self._service = service
        self._languages = languages
        self._outbox = service.outbox
        self._policy = policy
        self._secrets = tuple(secret for secret in secrets if secret)
        self._stopping = asyncio.Event()
        self._limiter = rate_limiter(policy.messages_per_second)
        self._pauses = pauses  # after a 429: per chat, or all chats (recorded by the limiter)
        self._claims = service.claims
        self._chats = ChatPacer(policy.per_chat_interval, policy.per_chat_burst)
        self._queues: dict[int, deque[Task]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._queued: set[int] = set()
        # Outcomes claimed and marked in flight, whose first piece has not left yet.
        self._marked: set[int] = set()
        # Chats whose claim was let go with their last delivery's mark (by their worker).
        self._let_go: set[int] = set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_scan = -MIN_SCAN_GAP
        try:
            while not self._stopping.is_set():
                # Under load nearly every outcome stored (and every worker done) wakes the
                # loop: scans are spaced so that each picks up what came meanwhile.
                gap = last_scan + MIN_SCAN_GAP - loop.time()
                if gap > 0:
                    await asyncio.sleep(gap)
                last_scan = loop.time()
                self._service.outbox_ready.clear()
                try:
                    await self.dispatch()
                    await self.show_progress()
                except Exception:
                    log.exception("delivery scan failed; scanning again later")
                await self._sleep()
        finally:
            # Sends under way finish (or stop between pieces); the rest stays in the outbox.
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()
        self._service.outbox_ready.set()

    async def _sleep(self) -> None:
        timeout = self._policy.scan_interval
        due = await self._outbox.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, (due - now()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._service.outbox_ready.wait()

    async def dispatch(self) -> int:
        """Hand each due outcome to its chat's worker; the number handed over.

        A chat gets a worker here only once this instance has claimed the chat (all the
        chats of one scan in one statement): with several instances on one database, one of
        them at a time delivers to a chat, in order.
        """
        due = [
            task
            for task in await self._outbox.due(BATCH, exclude=self._queued)
            if task.id not in self._queued
        ]
        wanted: dict[int, None] = {}  # new chats, in order, as many as may have a worker
        room = MAX_CHAT_WORKERS - len(self._workers)
        for task in due:
            if task.chat_id not in self._workers and len(wanted) < room:
                wanted[task.chat_id] = None
        taken = await self._outbox.take_chats(wanted) if wanted else set()
        handed = 0
        for task in due:
            if self._stopping.is_set():
                break
            if task.chat_id not in self._workers:
                if task.chat_id not in taken:
                    continue  # another instance delivers there, or no room: a later scan
                self._claims.chats.add(task.chat_id)
            self._queued.add(task.id)
            self._queues.setdefault(task.chat_id, deque()).append(task)
            if task.chat_id not in self._workers:
                self._workers[task.chat_id] = asyncio.create_task(
                    self._work(task.chat_id), name=f"delivery-chat-{task.chat_id}"
                )
            handed += 1
        return handed

    async def deliver_pending(self) -> None:
        """Dispatch what is due and wait until the workers are idle (for tests and tools)."""
        await self.dispatch()
        while self._workers:
            await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _work(self, chat_id: int) -> None:
        queue = self._queues[chat_id]
        try:
            while queue and not self._stopping.is_set():
                if chat_id in self._let_go:
                    # The last delivery let the chat go with its mark, and more came since.
                    if not await self._outbox.take_chat(chat_id):
                        break
                    self._let_go.discard(chat_id)
                task = queue.popleft()
                try:
                    await self.deliver(task, in_worker=True)
                except Exception:
                    log.exception("task %s: delivery failed unexpectedly", task.id)
                    await self._outbox.defer(task, self._backoff(task))
                finally:
                    self._queued.discard(task.id)
        finally:
            # Released while this worker is still the chat's: a new worker cannot take the
            # chat in between and then lose the claim to this release.
            if chat_id in self._let_go:
                self._let_go.discard(chat_id)  # released with the last delivery's mark
            else:
                try:
                    await self._outbox.release_chat(chat_id)
                except Exception as exc:  # the claim then simply runs out
                    log.warning("could not release chat %s: %s", chat_id, type(exc).__name__)
            self._claims.chats.discard(chat_id)
            for task in queue:
                self._queued.discard(task.id)
            del self._queues[chat_id]
            del self._workers[chat_id]
            if not self._stopping.is_set():
                self._service.outbox_ready.set()  # more may have become due meanwhile

    # --- one outcome ------------------------------------------------------------------------

    async def deliver(self, queued: Task, *, in_worker: bool = False) -> bool:
        """Send one outcome (what is left of it); True once it is delivered or given up.

        `in_worker`: sent by the chat's worker, which may let the chat go with the delivery's
        own mark when nothing else waits for the chat.
        """
        with about(queued.id, queued.run_id):
            try:
                return await self._deliver(queued, in_worker)
            finally:
                self._marked.discard(queued.id)

    async def _deliver(self, queued: Task, in_worker: bool) -> bool:
        if self._free_now(queued.chat_id):
            # The first piece may leave at once: its in-flight mark goes with the claim (one
            # statement, in a commit shared with other chats' marks), which also flags a
            # send found marked already (resent_after_crash).
            task = await self._outbox.claim_for_send(queued)
            if task is not None:
                self._marked.add(task.id)
            found_in_flight = queued.send_started_at is not None
        else:
            task = await self._outbox.claim(queued)
            found_in_flight = task is not None and task.send_started_at is not None
            if found_in_flight and task is not None:
                await self._outbox.resent_after_crash(task)
        if task is None:
            return False  # delivered, retried or given up meanwhile
        if found_in_flight:
            # The last process died with this send on the wire: Telegram may have it already.
            # Sending again may show it twice; not sending may lose it. Nothing is lost.
            log.warning(
                "task %s: a send was under way when the bot stopped; sending again "
                "(the user may see part %d twice)",
                task.id,
                task.delivered_parts + 1,
            )
        for _ in range(MAX_WAITS_PER_DELIVERY):
            try:
                await self._send_outcome(task)
            except RetryAfter as exc:
                # The rate limiter has recorded the pause (or raised because of it): _pace
                # waits it out, where a shutdown can interrupt it.
                log.info("task %s: chat %s must wait (%s)", task.id, task.chat_id, exc.message)
                self._marked.discard(task.id)
                await self._outbox.end_send(task)
                fresh = await self._outbox.claim(task)  # pieces sent so far count
                if fresh is None:
                    return False  # superseded meanwhile (a late text after a timeout notice)
                task = fresh
                continue
            except Forbidden as exc:
                log.warning("task %s: user unreachable (%s): not retrying", task.id, exc.message)
                await self._outbox.undeliverable(task)
                return True
            except BadRequest as exc:
                return await self._refused(task, exc)
            except TimedOut:
                # Only a timeout outside a piece's send (the pieces record their own).
                return await self._failed(task, "timed out")
            except NetworkError as exc:
                return await self._failed(task, f"network fault ({exc.message})")
            except TelegramError as exc:
                return await self._failed(task, f"Telegram error ({exc!r})")
            except _Stopping:
                await self._outbox.end_send(task)
                return False
            # Nothing else waits for the chat: its claim goes with this mark.
            release = in_worker and not self._queues.get(task.chat_id)
            await self._outbox.delivered(task, release_chat=release)
            if release:
                self._let_go.add(task.chat_id)
            return True
        return False  # still throttled: back in the outbox for the next scan

    async def _refused(self, task: Task, exc: BadRequest) -> bool:
        level = task.payload_level + 1
        if level > LAST_PAYLOAD_LEVEL:
            log.error(
                "task %s: Telegram refused every form of the outcome (%s): given up",
                task.id,
                exc.message,
            )
            await self._outbox.undeliverable(task)
            return True
        log.warning(
            "task %s: Telegram refused the outcome (%s); sending it in another form (level %d)",
            task.id,
            exc.message,
            level,
        )
        await self._outbox.change_payload(task, level)
        self._service.outbox_ready.set()
        return False

    async def _failed(self, task: Task, what: str) -> bool:
        """Count a failed send; past max_attempts the outcome is given up, not retried forever."""
        if task.delivery_attempts + 1 >= self._policy.max_attempts:
            log.error(
                "task %s: giving up delivery after %d attempts: %s",
                task.id,
                self._policy.max_attempts,
                what,
            )
            await self._outbox.undeliverable(task)
            return True
        pause = self._backoff(task)
        log.warning("task %s: send failed (%s); trying again in %.1f s", task.id, what, pause)
        await self._outbox.defer(task, pause)
        return False

    def _backoff(self, task: Task) -> float:
        pause = self._policy.retry_backoff * 2 ** min(task.delivery_attempts, 20)
        return float(min(pause, MAX_BACKOFF_SECONDS))

    # --- pacing -----------------------------------------------------------------------------

    async def _pace(self, chat_id: int) -> None:
        """Wait until this chat and Telegram as a whole may take one more message."""
        loop = asyncio.get_running_loop()
        while True:
            if self._stopping.is_set():
                raise _Stopping
            moment = loop.time()
            wait = max(self._pauses.remaining(chat_id), self._chats.wait(chat_id, moment))
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()
        self._chats.take(chat_id, loop.time())
        await self._limiter.acquire()

    def _free_now(self, chat_id: int) -> bool:
        moment = asyncio.get_running_loop().time()
        return self._pauses.remaining(chat_id) <= 0 and self._chats.wait(chat_id, moment) <= 0

    async def _send_piece(self, task: Task, index: int, send: Send, *, last: bool) -> None:
        """Send piece `index` of the outcome once, and record it as sent. The last piece is
        recorded with the delivery itself (`Outbox.delivered`): one commit, not two."""
        await self._pace(task.chat_id)
        if task.id in self._marked:
            self._marked.discard(task.id)  # marked in flight when it was claimed
        else:
            await self._outbox.in_flight(task)
        try:
            await send()
        except TimedOut:
            # Telegram may have delivered it: resending could show the text twice.
            log.warning(
                "task %s: piece %d timed out; recorded as possibly delivered", task.id, index + 1
            )
            task.send_timed_out = True
        if not last:
            await self._outbox.part_sent(task, index + 1, timed_out=task.send_timed_out)
        task.delivered_parts = index + 1

    async def _send_pieces(self, task: Task, sends: list[Send]) -> None:
        for index in range(task.delivered_parts, len(sends)):
            await self._send_piece(task, index, sends[index], last=index == len(sends) - 1)

    # --- payloads ---------------------------------------------------------------------------

    def _markup(self, task: Task, texts: Texts) -> InlineKeyboardMarkup | None:
        return buttons.under_text(
            texts,
            task,
            retry=task.retry_count < self._service.max_retries,
            refresh=task.reused_from is not None,
            as_file=task.state == TaskState.COMPLETED and bool(task.result_text),
        )

    @staticmethod
    def _reply(task: Task) -> ReplyParameters:
        return ReplyParameters(message_id=task.request_message_id, allow_sending_without_reply=True)

    async def _send_outcome(self, task: Task) -> None:
        texts = await self._languages.texts_of_user(task.user_id)
        if task.state == TaskState.COMPLETED and task.result_text:
            always_as_file = (await self._languages.preferences.of(task.user_id)).always_as_file
            sends = self._text_sends(task, task.result_text, texts, always_as_file)
            await self._send_pieces(task, sends)
        else:
            await self._send_pieces(task, [self._failure_send(task, texts)])

    def _failure_send(self, task: Task, texts: Texts) -> Send:
        level = task.payload_level
        text = texts.failure(task, self._reason(task) if level == 0 else None)
        return self._message(
            task,
            text,
            reply=self._reply(task) if level == 0 else None,
            markup=self._markup(task, texts) if level < LAST_PAYLOAD_LEVEL else None,
        )

    def _header(self, task: Task, texts: Texts) -> str:
        if task.reused_from is not None:
            made = task.text_made_at or task.completed_at or now()
            return texts.reused_header(task, (now() - made).total_seconds())
        return texts.result_header(task)

    def _text_sends(
        self, task: Task, text: str, texts: Texts, always_as_file: bool = False
    ) -> list[Send]:
        """The sends of a text result, at the task's payload level.

        Level 0 is what the user should see. After a refusal, what is left (the pieces of level
        0 not yet sent) goes as a document without a reply (level 1), then as small plain
        messages (level 2). delivered_parts always counts level-0 pieces, so a changed payload
        never repeats what the user already has.
        """
        header = self._header(task, texts)
        full = f"{header}\n\n{text}"
        pieces = [piece.strip() for piece in split_text(full) if piece.strip()]
        as_document = always_as_file or len(pieces) > self._policy.max_text_messages
        if task.payload_level == 0:
            if as_document:
                # A file by the user's choice is not called long.
                intro = (
                    header
                    if always_as_file and len(pieces) <= self._policy.max_text_messages
                    else None
                )
                return [
                    self._document(task, text, texts, header, reply=self._reply(task), intro=intro)
                ]
            return [
                self._message(
                    task,
                    piece,
                    reply=self._reply(task) if index == 0 else None,
                    markup=self._markup(task, texts) if index == len(pieces) - 1 else None,
                )
                for index, piece in enumerate(pieces)
            ]
        if as_document or task.delivered_parts == 0:
            rest = text
        else:
            rest = "\n\n".join(pieces[task.delivered_parts :])
        if task.payload_level == 1:
            remaining: Send = self._document(task, rest, texts, header, reply=None)
        else:
            remaining = self._small_messages(task, rest)
        # The pieces already sent stay sent; the rest goes as one send.
        return [_already_sent] * task.delivered_parts + [remaining]

    def _message(
        self,
        task: Task,
        text: str,
        *,
        reply: ReplyParameters | None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Send:
        async def send() -> Message:
            return await self._bot.send_message(
                task.chat_id,
                text,
                parse_mode=None,
                reply_parameters=reply,
                reply_markup=markup,
                rate_limit_args=NO_RETRIES,
            )

        return send

    def _document(
        self,
        task: Task,
        text: str,
        texts: Texts,
        header: str,
        *,
        reply: ReplyParameters | None,
        intro: str | None = None,
    ) -> Send:
        """The text as a .txt document, its caption a preview under `intro` (by default, the
        header of a reused text, and that the text is long)."""
        if intro is not None:
            room = CAPTION_LIMIT - utf16_len(intro) - 2
            caption = f"{intro}\n\n{preview(text, min(room, 600))}"
        else:
            lead = f"{header}\n\n" if task.reused_from is not None else ""
            room = CAPTION_LIMIT - utf16_len(lead + texts.document_caption(task, ""))
            caption = lead + texts.document_caption(task, preview(text, min(room, 600)))

        async def send() -> Message:
            # The user sees "sending a file..." while it uploads; only a courtesy.
            with contextlib.suppress(TelegramError):
                await self._bot.send_chat_action(
                    task.chat_id, ChatAction.UPLOAD_DOCUMENT, rate_limit_args=NO_RETRIES
                )
            return await self._bot.send_document(
                task.chat_id,
                document=text.encode("utf-8"),
                filename=f"task-{number_of(task)}.txt",
                caption=caption if reply is not None else texts.file_caption(task),
                parse_mode=None,
                reply_parameters=reply,
                reply_markup=self._markup(task, texts),
                rate_limit_args=NO_RETRIES,
            )

        return send

    def _small_messages(self, task: Task, text: str) -> Send:
        pieces = [piece for piece in split_text(text, SMALL_PIECE) if piece.strip()]

        async def send() -> None:
            for piece in pieces:
                await self._bot.send_message(
                    task.chat_id, piece, parse_mode=None, rate_limit_args=NO_RETRIES
                )

        return send

    def _reason(self, task: Task) -> str | None:
        detail = (task.error_detail or "").strip()
        if task.error_kind != FailureKind.WORKFLOW_FAILED.value or not detail:
            return None
        if len(detail) > _REASON_MAX or "\n" in detail or _NOT_FOR_USERS.search(detail):
            return None
        if any(secret in detail for secret in self._secrets):
            return None
        return detail

    # --- progress ---------------------------------------------------------------------------

    async def show_progress(self) -> int:
        """Edit acknowledgements to show new progress, at most one edit per interval per task.

        Skipped altogether while texts wait to be sent: they need the budget more.
        """
        edited = 0
        if self._queued:
            return 0
        done: set[int] = set()
        for task in await self._outbox.progress_to_show(
            self._policy.progress_edit_interval, PROGRESS_BATCH
        ):
            if task.id in done or self._stopping.is_set():
                continue
            if not self._free_now(task.chat_id):
                continue  # progress is a courtesy: never wait for it, show it next time
            if not await self._outbox.claim_progress_edit(
                task, self._policy.progress_edit_interval
            ):
                continue  # another instance is showing it
            siblings = await self._outbox.tasks_acknowledged_by(task) or [task]
            done.update(sibling.id for sibling in siblings)
            if await self._edit_progress(task, siblings):
                edited += 1
        return edited

    async def _edit_progress(self, task: Task, siblings: list[Task]) -> bool:
        assert task.ack_message_id is not None
        texts = await self._languages.texts_of_user(task.user_id)
        try:
            await self._pace(task.chat_id)
            await self._bot.edit_message_text(
                texts.accepted_with_progress(siblings, now()),
                chat_id=task.chat_id,
                message_id=task.ack_message_id,
                parse_mode=None,
                rate_limit_args=PROGRESS_EDIT,
            )
        except RetryAfter:
            return False  # the chat is paused (bot.pauses); shown at a later scan
        except _Stopping:
            return False
        except TelegramError as exc:
            # Progress is a courtesy: whatever went wrong ("not modified", a deleted message,
            # a network fault), do not hammer Telegram about it; the next change tries again.
            log.info("task %s: progress not shown: %s", task.id, exc)
        for sibling in siblings:
            await self._outbox.progress_shown(sibling, sibling.progress)
        return True


async def _already_sent() -> None:
    """A piece of the outcome that the user already has."""

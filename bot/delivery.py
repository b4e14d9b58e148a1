"""The delivery loop: sends stored outcomes to Telegram, then marks them delivered (an outbox).

It wakes at once when an outcome is stored and also scans on a timer, so an outcome stored
before a restart is sent after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot import texts
from bot.handlers import retry_markup
from bot.splitting import CAPTION_LIMIT, preview, split_text, utf16_len
from storage import Task, TaskState
from tasks import FailureKind, TaskService

log = logging.getLogger(__name__)

BATCH = 50
# Failed sends (network faults, unexpected errors) of one outcome before it is given up.
MAX_ATTEMPTS = 8
# A workflow's own failure reason is shown only when it reads like a sentence, not a dump.
_REASON_MAX = 160
_NOT_FOR_USERS = re.compile(r"traceback|exception|stack|token|secret|password|File \"", re.I)


class DeliveryLoop:
    def __init__(
        self,
        bot: Bot,
        service: TaskService,
        *,
        max_text_messages: int,
        scan_interval: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._bot = bot
        self._service = service
        self._max_text_messages = max_text_messages
        self._scan_interval = scan_interval
        self._secrets = tuple(secret for secret in secrets if secret)
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._service.outcome_ready.clear()
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("delivery scan failed; scanning again later")
            await self._sleep()

    def stop(self) -> None:
        self._stopping.set()
        self._service.outcome_ready.set()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._scan_interval):
                await self._service.outcome_ready.wait()

    async def deliver_pending(self) -> int:
        """Send every undelivered outcome once; the number delivered."""
        delivered = 0
        for task in await self._service.undelivered(BATCH):
            if self._stopping.is_set():
                break
            if await self.deliver(task):
                delivered += 1
        return delivered

    async def deliver(self, task: Task) -> bool:
        try:
            await self._send_outcome(task)
        except RetryAfter as exc:
            log.warning("task %s: Telegram asks to wait %s s", task.id, exc.retry_after)
            await self._count_attempt(task)
            await asyncio.sleep(_seconds(exc.retry_after))
            return False
        except Forbidden as exc:
            log.warning("task %s: user unreachable (%s): not retrying", task.id, exc.message)
            await self._service.mark_undeliverable(task)
            return False
        except TimedOut:
            # Telegram may have delivered it: resending could show the text twice.
            log.warning("task %s: send timed out; recorded as possibly delivered", task.id)
            await self._service.mark_delivered(task)
            return True
        except BadRequest as exc:
            log.error("task %s: Telegram refused the outcome: %s", task.id, exc.message)
            await self._service.mark_undeliverable(task)
            return False
        except NetworkError as exc:
            log.warning("task %s: network fault while sending (%s); will retry", task.id, exc)
            return await self._failed_attempt(task)
        except TelegramError as exc:
            log.error("task %s: Telegram error while sending: %r", task.id, exc)
            return await self._failed_attempt(task)
        await self._service.mark_delivered(task)
        return True

    async def _count_attempt(self, task: Task) -> None:
        await self._service.count_delivery_attempt(task)

    async def _failed_attempt(self, task: Task) -> bool:
        """Count a failed send; past MAX_ATTEMPTS the outcome is given up, not retried forever."""
        if task.delivery_attempts + 1 >= MAX_ATTEMPTS:
            log.error("task %s: giving up delivery after %d attempts", task.id, MAX_ATTEMPTS)
            await self._service.mark_undeliverable(task)
        else:
            await self._count_attempt(task)
        return False

    def _markup(self, task: Task) -> InlineKeyboardMarkup | None:
        if task.retry_count >= self._service.max_retries:
            return None
        return retry_markup(task.id)

    async def _send_outcome(self, task: Task) -> None:
        reply = ReplyParameters(
            message_id=task.request_message_id, allow_sending_without_reply=True
        )
        if task.state == TaskState.COMPLETED and task.result_text:
            await self._send_text_result(task, task.result_text, reply)
            return
        await self._bot.send_message(
            task.chat_id,
            texts.failure(task, self._reason(task)),
            parse_mode=None,
            reply_parameters=reply,
            reply_markup=self._markup(task),
        )

    async def _send_text_result(self, task: Task, text: str, reply: ReplyParameters) -> None:
        full = f"{texts.result_header(task)}\n\n{text}"
        pieces = [piece.strip() for piece in split_text(full) if piece.strip()]
        if len(pieces) <= self._max_text_messages:
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                await self._bot.send_message(
                    task.chat_id,
                    piece,
                    parse_mode=None,
                    reply_parameters=reply if index == 0 else None,
                    reply_markup=self._markup(task) if last else None,
                )
            return
        caption_room = CAPTION_LIMIT - utf16_len(texts.document_caption(task, ""))
        await self._bot.send_document(
            task.chat_id,
            document=text.encode("utf-8"),
            filename=f"task-{task.id}.txt",
            caption=texts.document_caption(task, preview(text, min(caption_room, 600))),
            parse_mode=None,
            reply_parameters=reply,
            reply_markup=self._markup(task),
        )

    def _reason(self, task: Task) -> str | None:
        detail = (task.error_detail or "").strip()
        if task.error_kind != FailureKind.WORKFLOW_FAILED.value or not detail:
            return None
        if len(detail) > _REASON_MAX or "\n" in detail or _NOT_FOR_USERS.search(detail):
            return None
        if any(secret in detail for secret in self._secrets):
            return None
        return detail


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]

"""TaskService: accept links, start Coze runs, apply outcomes, grant retries.

Everything is stored before anything is acted on: a task exists (pending) before its run is
started, and an outcome is stored (awaiting delivery) before anyone is told.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Literal, Protocol

from tortoise.timezone import now

from coze import CozeCallError, StartedRun, callback_token
from storage import Task, User, repository
from storage.repository import ApplyResult, Outcome, RetryDecision

log = logging.getLogger(__name__)


class FailureKind(StrEnum):
    """Why a task failed, beyond the Coze call errors of coze.client.ErrorClass."""

    WORKFLOW_FAILED = "workflow_failed"  # the workflow ran and reported a failure
    NO_TEXT = "no_text"  # the workflow succeeded but found no text


class WorkflowStarter(Protocol):
    async def start(self, link: str, run_id: str) -> StartedRun: ...


@dataclass(frozen=True)
class UserInfo:
    id: int
    first_name: str
    username: str | None


class CallbackReceipt(Enum):
    ACCEPTED = "accepted"  # stored (or a harmless duplicate / stale attempt)
    BAD_TOKEN = "bad_token"
    UNKNOWN_RUN = "unknown_run"


@dataclass(frozen=True)
class CallbackReport:
    """A callback from the workflow's HTTP node, already checked for shape."""

    run_id: str
    token: str
    status: Literal["success", "failed", "processing"]
    text: str = ""
    error: str = ""
    progress: int | None = None


def new_run_id() -> str:
    return uuid.uuid4().hex


class TaskService:
    def __init__(
        self,
        starter: WorkflowStarter,
        *,
        callback_secret: str,
        max_retries: int,
        timeout_seconds: int,
    ) -> None:
        self._starter = starter
        self._callback_secret = callback_secret
        self.max_retries = max_retries
        self._timeout = dt.timedelta(seconds=timeout_seconds)
        # Set whenever an outcome is stored that awaits delivery; the delivery loop waits on it.
        self.outcome_ready = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # --- accepting links ---------------------------------------------------------------------

    async def submit(
        self, user: UserInfo, *, chat_id: int, message_id: int, links: list[str]
    ) -> list[Task]:
        """Store one pending task per link. Call `start_all` once the user has been answered."""
        await repository.upsert_user(user.id, user.first_name, user.username)
        return await repository.create_tasks(
            user_id=user.id,
            chat_id=chat_id,
            request_message_id=message_id,
            links=[(link, new_run_id()) for link in links],
        )

    async def set_ack_message(self, task: Task, message_id: int) -> None:
        await repository.set_ack_message(task.id, message_id)

    def start_all(self, tasks: list[Task]) -> None:
        """Start the tasks' runs in the background: the caller never waits on Coze."""
        for task in tasks:
            self._spawn(self._start(task.id, task.run_id, task.input_url))

    async def resume_pending(self) -> int:
        """Start the runs of tasks left pending (e.g. by a crash before Coze was called)."""
        pending = await repository.pending_tasks()
        self.start_all(pending)
        return len(pending)

    async def _start(self, task_id: int, run_id: str, link: str) -> None:
        try:
            run = await self._starter.start(link, run_id)
        except CozeCallError as exc:
            log.warning("task %s: could not start the Coze run: %s", task_id, exc.detail)
            if await repository.fail_start(
                task_id=task_id, run_id=run_id, error_kind=exc.kind.value, error_detail=exc.detail
            ):
                self.outcome_ready.set()
            return
        started = await repository.mark_started(
            task_id=task_id,
            run_id=run_id,
            execute_id=run.execute_id,
            expires_at=now() + self._timeout,
        )
        log.info(
            "task %s: run %s started (execute_id %s)%s",
            task_id,
            run_id,
            run.execute_id,
            "" if started else ", already settled",
        )

    # --- outcomes ----------------------------------------------------------------------------

    async def handle_callback(self, report: CallbackReport) -> CallbackReceipt:
        expected = callback_token(self._callback_secret, report.run_id)
        if not hmac.compare_digest(expected, report.token):
            return CallbackReceipt.BAD_TOKEN
        if report.status == "processing":
            result = await repository.update_progress(report.run_id, report.progress or 0)
        else:
            result = await repository.apply_outcome(
                report.run_id, self._outcome_of(report), via_callback=True
            )
            if result is ApplyResult.APPLIED:
                self.outcome_ready.set()
        log.info("callback for run %s (%s): %s", report.run_id, report.status, result.value)
        if result is ApplyResult.UNKNOWN:
            return CallbackReceipt.UNKNOWN_RUN
        return CallbackReceipt.ACCEPTED

    @staticmethod
    def _outcome_of(report: CallbackReport) -> Outcome:
        if report.status == "success":
            if report.text.strip():
                return Outcome(succeeded=True, text=report.text)
            return Outcome(
                succeeded=False,
                error_kind=FailureKind.NO_TEXT.value,
                error_detail="the workflow returned no text",
            )
        return Outcome(
            succeeded=False,
            error_kind=FailureKind.WORKFLOW_FAILED.value,
            error_detail=report.error.strip() or "the workflow reported a failure",
        )

    # --- retry -------------------------------------------------------------------------------

    async def retry(self, *, task_id: int, user_id: int) -> RetryDecision:
        """Start a new run of a finished task, if the user owns it and has retries left."""
        decision = await repository.begin_retry(
            task_id=task_id,
            user_id=user_id,
            new_run_id=new_run_id(),
            max_retries=self.max_retries,
        )
        if decision.refusal is None and decision.task is not None:
            self.start_all([decision.task])
        return decision

    # --- reading -----------------------------------------------------------------------------

    async def user(self, user_id: int) -> User | None:
        return await repository.get_user(user_id)

    async def task_of(self, user_id: int, task_id: int) -> Task | None:
        return await repository.get_user_task(user_id, task_id)

    async def recent_tasks(self, user_id: int, limit: int = 10) -> list[Task]:
        return await repository.recent_tasks(user_id, limit)

    async def undelivered(self, limit: int) -> list[Task]:
        return await repository.undelivered_outcomes(limit)

    async def mark_delivered(self, task: Task) -> bool:
        return await repository.mark_delivered(task.id, task.run_id)

    async def mark_undeliverable(self, task: Task) -> bool:
        return await repository.mark_undeliverable(task.id, task.run_id)

    async def count_delivery_attempt(self, task: Task) -> None:
        await repository.count_delivery_attempt(task.id, task.run_id)

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Let run starts in flight finish; cancel the rest (they stay pending, resumed later)."""
        if not self._background:
            return
        _, still_running = await asyncio.wait(set(self._background), timeout=grace_seconds)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)

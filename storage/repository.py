"""The task state machine: every change of state is one conditional UPDATE.

Two callers racing (two callbacks, a callback and the reconciler, two presses of Retry) run the
same UPDATE ... WHERE state IN (...); the database lets exactly one of them change a row, and
the other sees 0 rows updated and backs off.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from tortoise.expressions import F
from tortoise.timezone import now
from tortoise.transactions import in_transaction

from storage.models import FINISHED_STATES, OPEN_STATES, Task, TaskRun, TaskState, User


async def upsert_user(user_id: int, first_name: str, username: str | None) -> User:
    user, created = await User.get_or_create(
        id=user_id, defaults={"first_name": first_name, "username": username}
    )
    if not created and (user.first_name != first_name or user.username != username):
        user.first_name, user.username = first_name, username
        await user.save(update_fields=["first_name", "username", "updated_at"])
    return user


async def create_task(
    *, user_id: int, chat_id: int, request_message_id: int, input_url: str, run_id: str
) -> Task:
    """Store a new task (state pending) and its first run id, before Coze is called."""
    (task,) = await create_tasks(
        user_id=user_id,
        chat_id=chat_id,
        request_message_id=request_message_id,
        links=[(input_url, run_id)],
    )
    return task


async def create_tasks(
    *, user_id: int, chat_id: int, request_message_id: int, links: list[tuple[str, str]]
) -> list[Task]:
    """Store one pending task per (link, run id) of one message, all or none."""
    tasks = []
    async with in_transaction():
        for input_url, run_id in links:
            task = await Task.create(
                user_id=user_id,
                chat_id=chat_id,
                request_message_id=request_message_id,
                input_url=input_url,
                run_id=run_id,
            )
            await TaskRun.create(run_id=run_id, task_id=task.id)
            tasks.append(task)
    return tasks


async def set_ack_message(task_id: int, message_id: int) -> None:
    await Task.filter(id=task_id).update(ack_message_id=message_id)


async def mark_started(
    *, task_id: int, run_id: str, execute_id: str, expires_at: dt.datetime
) -> bool:
    """pending -> processing for this run; False if the run is no longer current and pending.

    The execute id is recorded whatever the state: a fast workflow's callback may already have
    settled the task, and the id still belongs to the run's history.
    """
    async with in_transaction():
        await TaskRun.filter(run_id=run_id).update(execute_id=execute_id)
        await Task.filter(id=task_id, run_id=run_id).update(execute_id=execute_id)
        updated = await Task.filter(id=task_id, run_id=run_id, state=TaskState.PENDING).update(
            state=TaskState.PROCESSING, started_at=now(), expires_at=expires_at
        )
    return updated == 1


async def fail_start(*, task_id: int, run_id: str, error_kind: str, error_detail: str) -> bool:
    """pending -> failed when the run could not be started; the failure awaits delivery."""
    updated = await Task.filter(id=task_id, run_id=run_id, state=TaskState.PENDING).update(
        state=TaskState.FAILED,
        error_kind=error_kind,
        error_detail=error_detail,
        completed_at=now(),
        notification_sent=False,
    )
    return updated == 1


class ApplyResult(Enum):
    APPLIED = "applied"  # the outcome settled the task
    IGNORED = "ignored"  # a duplicate, or an outcome of an old attempt: nothing to do
    UNKNOWN = "unknown"  # no attempt with this run id was ever stored


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    text: str = ""
    error_kind: str | None = None
    error_detail: str | None = None


async def apply_outcome(run_id: str, outcome: Outcome, *, via_callback: bool) -> ApplyResult:
    """Settle the task whose current run is `run_id` (in one transaction), or say why not."""
    async with in_transaction():
        task = await Task.get_or_none(run_id=run_id)
        if task is None:
            known = await TaskRun.exists(run_id=run_id)
            return ApplyResult.IGNORED if known else ApplyResult.UNKNOWN
        stamp = now()
        values: dict[str, object] = {
            "state": TaskState.COMPLETED if outcome.succeeded else TaskState.FAILED,
            "result_text": outcome.text if outcome.succeeded else None,
            "error_kind": None if outcome.succeeded else outcome.error_kind,
            "error_detail": None if outcome.succeeded else outcome.error_detail,
            "progress": 100 if outcome.succeeded else task.progress,
            "completed_at": stamp,
            "notification_sent": False,
        }
        if via_callback:
            values["callback_received"] = True
        first_success = outcome.succeeded and not task.counted
        if outcome.succeeded:
            values["counted"] = True
        updated = await Task.filter(id=task.id, run_id=run_id, state__in=OPEN_STATES).update(
            **values
        )
        if updated != 1:
            return ApplyResult.IGNORED
        if first_success:
            await User.filter(id=task.user_id).update(
                extract_count=F("extract_count") + 1, last_extract_at=stamp
            )
    return ApplyResult.APPLIED


async def update_progress(run_id: str, progress: int) -> ApplyResult:
    """Record progress of a running attempt; never moves the state."""
    if not await TaskRun.exists(run_id=run_id):
        return ApplyResult.UNKNOWN
    updated = await Task.filter(
        run_id=run_id, state__in=(TaskState.PENDING, TaskState.PROCESSING)
    ).update(progress=progress)
    return ApplyResult.APPLIED if updated == 1 else ApplyResult.IGNORED


class RetryRefusal(Enum):
    NOT_FOUND = "not_found"  # no such task, or not this user's (the same answer for both)
    BUSY = "busy"  # still pending or processing: a run is under way already
    NO_RETRIES_LEFT = "no_retries_left"


@dataclass(frozen=True)
class RetryDecision:
    task: Task | None
    refusal: RetryRefusal | None


async def begin_retry(
    *, task_id: int, user_id: int, new_run_id: str, max_retries: int
) -> RetryDecision:
    """finished -> pending with a new run id, if the user owns the task and has retries left."""
    async with in_transaction():
        updated = await Task.filter(
            id=task_id, user_id=user_id, state__in=FINISHED_STATES, retry_count__lt=max_retries
        ).update(
            state=TaskState.PENDING,
            run_id=new_run_id,
            retry_count=F("retry_count") + 1,
            execute_id=None,
            result_text=None,
            error_kind=None,
            error_detail=None,
            progress=0,
            callback_received=False,
            notification_sent=False,
            undeliverable=False,
            delivery_attempts=0,
            started_at=None,
            completed_at=None,
            expires_at=None,
            notified_at=None,
        )
        if updated == 1:
            await TaskRun.create(run_id=new_run_id, task_id=task_id)
        task = await Task.get_or_none(id=task_id, user_id=user_id)
    if task is None:
        return RetryDecision(None, RetryRefusal.NOT_FOUND)
    if updated == 1:
        return RetryDecision(task, None)
    if task.state in FINISHED_STATES:
        return RetryDecision(task, RetryRefusal.NO_RETRIES_LEFT)
    return RetryDecision(task, RetryRefusal.BUSY)


async def pending_tasks() -> list[Task]:
    """Tasks stored but never started (e.g. left by a crash), oldest first."""
    return await Task.filter(state=TaskState.PENDING).order_by("id")


async def undelivered_outcomes(limit: int) -> list[Task]:
    """Settled tasks whose outcome the user has not been sent yet, oldest first."""
    return (
        await Task.filter(state__in=FINISHED_STATES, notification_sent=False, undeliverable=False)
        .order_by("completed_at", "id")
        .limit(limit)
    )


async def mark_delivered(task_id: int, run_id: str) -> bool:
    """Record that this attempt's outcome reached the user (only that attempt's)."""
    updated = await Task.filter(id=task_id, run_id=run_id, notification_sent=False).update(
        notification_sent=True, notified_at=now(), delivery_attempts=F("delivery_attempts") + 1
    )
    return updated == 1


async def mark_undeliverable(task_id: int, run_id: str) -> bool:
    updated = await Task.filter(id=task_id, run_id=run_id, notification_sent=False).update(
        undeliverable=True, delivery_attempts=F("delivery_attempts") + 1
    )
    return updated == 1


async def count_delivery_attempt(task_id: int, run_id: str) -> None:
    await Task.filter(id=task_id, run_id=run_id).update(
        delivery_attempts=F("delivery_attempts") + 1
    )


async def get_user(user_id: int) -> User | None:
    return await User.get_or_none(id=user_id)


async def get_user_task(user_id: int, task_id: int) -> Task | None:
    return await Task.get_or_none(id=task_id, user_id=user_id)


async def recent_tasks(user_id: int, limit: int) -> list[Task]:
    return await Task.filter(user_id=user_id).order_by("-id").limit(limit)

"""The task state machine: every change of state is one conditional UPDATE.

Two callers racing (two callbacks, a callback and the reconciler, two presses of Retry) run the
same UPDATE ... WHERE state IN (...); the database lets exactly one of them change a row, and
the other sees 0 rows updated and backs off.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tortoise.expressions import F, Q
from tortoise.functions import Count
from tortoise.queryset import QuerySet
from tortoise.timezone import now
from tortoise.transactions import in_transaction

from storage.claims import LOCAL, RELEASED, Lease, chats_held_by_others, task_free
from storage.models import (
    FINISHED_STATES,
    OPEN_STATES,
    InboxUpdate,
    RunSpent,
    Task,
    TaskRun,
    TaskState,
    User,
    UserAccess,
)
from storage.prebuilt import Prebuilt, placeholders

#: A user as Telegram shows them now: stored if new, names brought up to date if not (a
#: language Telegram stops reporting is kept), and `?` task numbers taken from their counter,
#: which only ever grows: one statement, which says the last number taken.
_UPSERT_USER = Prebuilt(
    """
    INSERT INTO users (id, first_name, username, language_code, extract_count, always_as_file,
                       last_task_number, created_at, updated_at)
    VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name,
        username = excluded.username,
        language_code = COALESCE(excluded.language_code, users.language_code),
        last_task_number = users.last_task_number + excluded.last_task_number,
        updated_at = excluded.updated_at
    RETURNING last_task_number
    """
)


@dataclass(frozen=True)
class UserNames:
    """How Telegram shows a user now."""

    first_name: str
    username: str | None = None
    language_code: str | None = None


async def upsert_user(
    user_id: int, first_name: str, username: str | None, language_code: str | None = None
) -> None:
    await _upsert(user_id, UserNames(first_name, username, language_code), numbers=0)


async def _upsert(user_id: int, names: UserNames, *, numbers: int) -> int:
    """Store or update the user, taking `numbers` task numbers; the last number taken."""
    stamp = now()
    (row,) = await _UPSERT_USER.rows(
        [user_id, names.first_name, names.username, names.language_code, False, numbers,
         stamp, stamp]
    )  # fmt: skip
    return int(row["last_task_number"])


async def set_user_preference(user_id: int, first_name: str, **values: object) -> None:
    """Store a user's choice (language, always_as_file), creating the user if need be."""
    await User.get_or_create(id=user_id, defaults={"first_name": first_name})
    await User.filter(id=user_id).update(**values)


async def create_task(
    *,
    user_id: int,
    chat_id: int,
    request_message_id: int,
    input_url: str,
    run_id: str,
    expires_at: dt.datetime | None = None,
) -> Task:
    """Store a new task (state pending) and its first run id, before Coze is called."""
    (task,) = await create_tasks(
        user_id=user_id,
        chat_id=chat_id,
        request_message_id=request_message_id,
        links=[(input_url, run_id)],
        expires_at=expires_at,
    )
    return task


@dataclass(frozen=True)
class NewTask:
    link: str
    run_id: str
    video_key: str | None = None
    # An earlier extraction of the same video: the task is answered from its text at once.
    reuse: Task | None = None


#: The user's own task numbers: taken from their counter, which only ever grows.
_TAKE_NUMBERS = Prebuilt(
    "UPDATE users SET last_task_number = last_task_number + ? WHERE id = ?"
    " RETURNING last_task_number"
)
_NEW_RUN = Prebuilt("INSERT INTO task_runs (run_id, task_id, created_at) VALUES (?, ?, ?)")


async def create_tasks(
    *,
    user_id: int,
    chat_id: int,
    request_message_id: int,
    links: list[tuple[str, str]] | list[NewTask],
    expires_at: dt.datetime | None = None,
    names: UserNames | None = None,
) -> list[Task]:
    """Store one task per link of one message, all or none: pending, or completed with the
    text of an earlier extraction of the same video (awaiting delivery, with no Coze run).

    `expires_at` is the deadline: past it an unfinished task becomes `timeout`. With `names`,
    the user is stored (or brought up to date) in the same transaction; without, they must
    exist already.
    """
    wanted = [item if isinstance(item, NewTask) else NewTask(*item) for item in links]
    tasks = []
    async with in_transaction():
        if names is not None:
            last = await _upsert(user_id, names, numbers=len(wanted))
        else:
            (numbered,) = await _TAKE_NUMBERS.rows([len(wanted), user_id])
            last = int(numbered["last_task_number"])
        stamp = now()
        for offset, item in enumerate(wanted):
            reused: dict[str, Any] = {}
            if item.reuse is not None:
                source = item.reuse
                reused = {
                    "state": TaskState.COMPLETED,
                    "result_text": source.result_text,
                    "output_trimmed": source.output_trimmed,
                    "reused_from": source.id,
                    "text_made_at": source.text_made_at or source.completed_at,
                    "completed_at": stamp,
                    "progress": 100,
                }
            task = await Task.create(
                user_id=user_id,
                user_number=last - len(wanted) + offset + 1,
                chat_id=chat_id,
                request_message_id=request_message_id,
                input_url=item.link,
                video_key=item.video_key,
                run_id=item.run_id,
                expires_at=None if item.reuse is not None else expires_at,
                **reused,
            )
            if item.reuse is None:
                await _NEW_RUN.count([item.run_id, task.id, stamp])
            tasks.append(task)
        await _spend_runs(user_id, sum(1 for item in wanted if item.reuse is None), stamp)
    return tasks


#: How long a run spent is remembered for the daily quota (more than its 24 hours).
RUNS_SPENT_KEPT = dt.timedelta(hours=48)


_SPEND_RUN = Prebuilt("INSERT INTO runs_spent (user_id, spent_at) VALUES (?, ?)")
_FORGET_OLD_RUNS = Prebuilt("DELETE FROM runs_spent WHERE user_id = ? AND spent_at < ?")


async def _spend_runs(user_id: int, count: int, moment: dt.datetime) -> None:
    if count:
        for _ in range(count):
            await _SPEND_RUN.count([user_id, moment])
        await _FORGET_OLD_RUNS.count([user_id, moment - RUNS_SPENT_KEPT])


_NEWEST_TEXT_OF_VIDEO = Prebuilt(
    """
    SELECT * FROM tasks
    WHERE video_key = ? AND state = ? AND text_made_at >= ? AND result_text IS NOT NULL
    ORDER BY text_made_at DESC LIMIT 1
    """
)


async def reusable_text(video_key: str, since: dt.datetime) -> Task | None:
    """The newest text of this video extracted since `since` (any user's), if any."""
    # Asked for every link: prebuilt SQL finds it and reads the row, in one statement.
    found = await _NEWEST_TEXT_OF_VIDEO.rows([video_key, TaskState.COMPLETED.value, since])
    return Task._init_from_db(**found[0]) if found else None


async def set_ack_message(task_id: int, message_id: int) -> None:
    await Task.filter(id=task_id).update(ack_message_id=message_id)


_RUN_EXECUTE_ID = Prebuilt("UPDATE task_runs SET execute_id = ? WHERE run_id = ?")
_STARTED = Prebuilt(
    """
    UPDATE tasks SET state = ?, started_at = ?, next_check_at = ?, checks = 0, execute_id = ?,
        lease_holder = NULL, lease_until = NULL
    WHERE id = ? AND run_id = ? AND state = ?
    """
)
_TASK_EXECUTE_ID = Prebuilt("UPDATE tasks SET execute_id = ? WHERE id = ? AND run_id = ?")


async def mark_started(
    *, task_id: int, run_id: str, execute_id: str, next_check_at: dt.datetime
) -> bool:
    """pending -> processing for this run; False if the run is no longer current and pending.

    The execute id is recorded whatever the state: a fast workflow's callback may already have
    settled the task, and the id still belongs to the run's history.
    """
    async with in_transaction():
        await _RUN_EXECUTE_ID.count([execute_id, run_id])
        started = await _STARTED.count(
            [TaskState.PROCESSING.value, now(), next_check_at, execute_id, task_id, run_id,
             TaskState.PENDING.value]
        )  # fmt: skip
        if not started:  # settled already (a fast callback), or retried: the id only
            await _TASK_EXECUTE_ID.count([execute_id, task_id, run_id])
    return started == 1


async def fail_start(*, task_id: int, run_id: str, error_kind: str, error_detail: str) -> bool:
    """pending -> failed when the run could not be started; the failure awaits delivery."""
    updated = await Task.filter(id=task_id, run_id=run_id, state=TaskState.PENDING).update(
        state=TaskState.FAILED,
        error_kind=error_kind,
        error_detail=error_detail,
        completed_at=now(),
        notification_sent=False,
        **RELEASED,
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
    trimmed: bool = False  # Coze cut the output (is_output_trimmed)


async def apply_outcome(run_id: str, outcome: Outcome, *, via_callback: bool) -> ApplyResult:
    """Settle the task whose current run is `run_id` (in one transaction), or say why not."""
    (result,) = await apply_outcomes([(run_id, outcome, via_callback)])
    return result


async def apply_outcomes(items: list[tuple[str, Outcome, bool]]) -> list[ApplyResult]:
    """Settle several tasks in one transaction (one commit, one fsync): for each (run id,
    outcome, via callback), what became of it.

    One statement per outcome (a conditional UPDATE that returns the row it settled), and for
    the whole batch one more for the tasks counted in their users' extractions and one per
    distinct count for the users (usually one).
    """
    stamp = now()
    async with in_transaction():
        results = []
        newly_counted: dict[int, int] = {}  # task id -> user id
        for run_id, outcome, via_callback in items:
            rows = await _settle_sql(outcome.succeeded, via_callback).rows(
                [*_settled_values(outcome, stamp), run_id]
            )
            if not rows:
                results.append(await _not_applied(run_id))
                continue
            (row,) = rows
            # The task's first success counts in its user's extractions; a retried task that
            # succeeds again does not.
            if outcome.succeeded and not row["counted"]:
                newly_counted[int(row["id"])] = int(row["user_id"])
            results.append(ApplyResult.APPLIED)
        if newly_counted:
            await _count_extractions(newly_counted, stamp)
    return results


#: The open states, as SQL (an outcome is applied only to a task in one of them).
_OPEN_SQL = ", ".join(f"'{state.value}'" for state in OPEN_STATES)


@functools.cache
def _settle_sql(succeeded: bool, via_callback: bool) -> Prebuilt:
    """UPDATE ... WHERE run_id = ? AND state IN (open) RETURNING id, user_id, counted.

    A late outcome after a timeout notice is a new delivery from its first piece: every
    delivery column starts again.
    """
    extra = ""
    if via_callback:
        extra += ", callback_received = TRUE"
    if succeeded:
        extra += ", progress = 100"
    return Prebuilt(
        f"""UPDATE tasks SET state = ?, result_text = ?, output_trimmed = ?, text_made_at = ?,
        error_kind = ?, error_detail = ?, completed_at = ?, next_check_at = NULL,
        notification_sent = FALSE, undeliverable = FALSE, delivery_attempts = 0,
        delivered_parts = 0, payload_level = 0, deliver_after = NULL, send_started_at = NULL,
        lease_holder = NULL, lease_until = NULL{extra}
        WHERE run_id = ? AND state IN ({_OPEN_SQL})
        RETURNING id, user_id, counted"""
    )


def _settled_values(outcome: Outcome, stamp: dt.datetime) -> list[object]:
    if outcome.succeeded:
        return [TaskState.COMPLETED.value, outcome.text, outcome.trimmed, stamp, None, None, stamp]
    return [
        TaskState.FAILED.value,
        None,
        False,
        None,
        outcome.error_kind,
        outcome.error_detail,
        stamp,
    ]


async def _count_extractions(tasks: dict[int, int], stamp: dt.datetime) -> None:
    """Count first successes: the tasks marked counted, each user's count raised by theirs."""
    marked = f"UPDATE tasks SET counted = TRUE WHERE id IN ({placeholders(len(tasks))})"
    await Prebuilt(marked).count(list(tasks))
    per_user = Counter(tasks.values())
    for times in sorted(set(per_user.values())):
        users = [user for user, count in per_user.items() if count == times]
        await Prebuilt(
            "UPDATE users SET extract_count = extract_count + ?, last_extract_at = ? "
            f"WHERE id IN ({placeholders(len(users))})"
        ).count([times, stamp, *users])


_SETTLED_ALREADY = Prebuilt(
    """SELECT (SELECT state FROM tasks WHERE run_id = ?) AS state,
    EXISTS (SELECT 1 FROM task_runs WHERE run_id = ?) AS known"""
)
_RUN_KNOWN = Prebuilt("SELECT 1 AS known FROM task_runs WHERE run_id = ? LIMIT 1")


async def settled_already(run_id: str) -> ApplyResult | None:
    """What an outcome of `run_id` would come to, when reads alone can tell (its task settled
    already, an old attempt, an unknown run): a duplicate is answered with no write, from one
    statement. None: the run is open, and its outcome must be applied."""
    (row,) = await _SETTLED_ALREADY.rows([run_id, run_id])
    state = row["state"]
    if state is None:
        return ApplyResult.IGNORED if row["known"] else ApplyResult.UNKNOWN
    return None if state in _OPEN_VALUES else ApplyResult.IGNORED


_OPEN_VALUES = frozenset(state.value for state in OPEN_STATES)


async def _not_applied(run_id: str) -> ApplyResult:
    """No open task has this run: an old (or settled) attempt, or a run never stored."""
    return ApplyResult.IGNORED if await _RUN_KNOWN.rows([run_id]) else ApplyResult.UNKNOWN


_PROGRESS = Prebuilt(
    "UPDATE tasks SET progress = ? WHERE run_id = ? AND state IN ('pending', 'processing')"
)


async def update_progress(run_id: str, progress: int) -> ApplyResult:
    """Record progress of a running attempt; never moves the state."""
    if await _PROGRESS.count([progress, run_id]):
        return ApplyResult.APPLIED
    return await _not_applied(run_id)


class RetryRefusal(Enum):
    NOT_FOUND = "not_found"  # no such task, or not this user's (the same answer for both)
    BUSY = "busy"  # still pending or processing: a run is under way already
    NO_RETRIES_LEFT = "no_retries_left"


@dataclass(frozen=True)
class RetryDecision:
    task: Task | None
    refusal: RetryRefusal | None


async def begin_retry(
    *,
    task_id: int,
    user_id: int,
    new_run_id: str,
    max_retries: int,
    expires_at: dt.datetime,
    refresh: bool = False,
) -> RetryDecision:
    """finished -> pending with a new run id, if the user owns the task and has retries left.

    `refresh`: a new extraction of a text answered from an earlier one; it spends no retry.
    """
    async with in_transaction():
        allowed = (
            Task.filter(id=task_id, user_id=user_id, state=TaskState.COMPLETED).filter(
                reused_from__isnull=False
            )
            if refresh
            else Task.filter(
                id=task_id, user_id=user_id, state__in=FINISHED_STATES, retry_count__lt=max_retries
            )
        )
        updated = await allowed.update(
            state=TaskState.PENDING,
            run_id=new_run_id,
            retry_count=F("retry_count") + (0 if refresh else 1),
            reused_from=None,
            text_made_at=None,
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
            expires_at=expires_at,
            notified_at=None,
            next_check_at=None,
            checks=0,
            delivered_parts=0,
            payload_level=0,
            deliver_after=None,
            send_started_at=None,
            send_timed_out=False,
            resent_after_crash=False,
            progress_shown=0,
            progress_edited_at=None,
            output_trimmed=False,
            **RELEASED,
        )
        if updated == 1:
            await TaskRun.create(run_id=new_run_id, task_id=task_id)
            await _spend_runs(user_id, 1, now())
        task = await Task.get_or_none(id=task_id, user_id=user_id)
    if task is None:
        return RetryDecision(None, RetryRefusal.NOT_FOUND)
    if updated == 1:
        return RetryDecision(task, None)
    if task.state in FINISHED_STATES:
        return RetryDecision(task, RetryRefusal.NO_RETRIES_LEFT)
    return RetryDecision(task, RetryRefusal.BUSY)


async def due_for_check(
    moment: dt.datetime, limit: int, exclude: Collection[int] = (), lease: Lease = LOCAL
) -> list[Task]:
    """Running tasks with no callback whose next run-history check is due, most overdue first,
    leaving out the ids in `exclude` (checks under way) and those another instance holds.

    A task whose callback has arrived is never here: the callback settled it.
    """
    query = _checkable(moment, exclude, lease).filter(next_check_at__lte=moment)
    return await query.order_by("next_check_at", "id").limit(limit)


async def next_check_due(exclude: Collection[int] = (), lease: Lease = LOCAL) -> dt.datetime | None:
    """When the next run-history check falls due (of those `due_for_check` would return)."""
    query = _checkable(now(), exclude, lease).filter(next_check_at__isnull=False)
    task = await query.order_by("next_check_at").first()
    return task.next_check_at if task is not None else None


def _checkable(moment: dt.datetime, exclude: Collection[int], lease: Lease) -> QuerySet[Task]:
    """Running tasks with no callback yet, not in `exclude` nor held by another instance."""
    query = Task.filter(
        task_free(lease, moment),
        state=TaskState.PROCESSING,
        callback_received=False,
        execute_id__isnull=False,
    )
    return query.exclude(id__in=list(exclude)) if exclude else query


async def schedule_check(*, task_id: int, run_id: str, next_check_at: dt.datetime) -> None:
    """Count a check of this run that settled nothing, and when to look again."""
    await Task.filter(id=task_id, run_id=run_id, state=TaskState.PROCESSING).update(
        checks=F("checks") + 1, next_check_at=next_check_at, **RELEASED
    )


async def claim_check(task_id: int, run_id: str, lease: Lease = LOCAL) -> bool:
    """Claim the run-history check of this running attempt; False if another instance holds
    it or the task settled meanwhile. Released when the check schedules the next one or the
    task settles."""
    moment = now()
    taken = await Task.filter(
        task_free(lease, moment), id=task_id, run_id=run_id, state=TaskState.PROCESSING
    ).update(lease_holder=lease.holder, lease_until=lease.until(moment))
    return taken == 1


async def overdue_tasks(moment: dt.datetime, lease: Lease = LOCAL) -> list[Task]:
    """Tasks still pending or processing past their deadline, oldest first, but those another
    instance is starting or checking (it decides)."""
    return await Task.filter(
        task_free(lease, moment),
        state__in=(TaskState.PENDING, TaskState.PROCESSING),
        expires_at__lte=moment,
    ).order_by("id")


async def expire(task: Task, moment: dt.datetime) -> bool:
    """pending/processing -> timeout for this attempt; False if it settled meanwhile.

    The outcome (a timeout notice) awaits delivery like any other. The run's own outcome may
    still arrive later and is then applied (TIMEOUT is an open state).
    """
    updated = await Task.filter(
        id=task.id, run_id=task.run_id, state__in=(TaskState.PENDING, TaskState.PROCESSING)
    ).update(
        state=TaskState.TIMEOUT,
        completed_at=moment,
        next_check_at=None,
        error_kind=None,
        error_detail=None,
        notification_sent=False,
        **RELEASED,
    )
    return updated == 1


async def pending_tasks(
    limit: int | None = None, exclude: Collection[int] = (), lease: Lease = LOCAL
) -> list[Task]:
    """Tasks stored but not started (waiting their turn, or left by a crash), oldest first,
    leaving out the ids in `exclude` (starts under way) and those another instance is
    starting."""
    query = Task.filter(task_free(lease, now()), state=TaskState.PENDING)
    if exclude:
        query = query.exclude(id__in=list(exclude))
    query = query.order_by("id")
    return await (query.limit(limit) if limit is not None else query)


async def processing_count() -> int:
    """Runs in flight: tasks whose run Coze accepted and whose outcome has not come."""
    return await Task.filter(state=TaskState.PROCESSING).count()


async def starts_under_way(lease: Lease = LOCAL) -> int:
    """Runs being started by any instance other than this one (claimed, still pending)."""
    return (
        await Task.filter(state=TaskState.PENDING, lease_until__gt=now())
        .exclude(lease_holder=lease.holder)
        .count()
    )


async def runs_in_flight_or_waiting(*, before_task_id: int, exclude: Collection[int]) -> int:
    """Runs in flight plus tasks waiting for a run that arrived before `before_task_id`,
    leaving out the ids in `exclude` (starts under way)."""
    waiting = Task.filter(state=TaskState.PENDING, id__lt=before_task_id)
    if exclude:
        waiting = waiting.exclude(id__in=list(exclude))
    return await processing_count() + await waiting.count()


async def claim_start(
    task_id: int, run_id: str, expires_at: dt.datetime, lease: Lease = LOCAL
) -> bool:
    """Claim the start of a pending run and set its deadline; False if it is no longer
    pending or another instance is starting it."""
    moment = now()
    updated = await Task.filter(
        task_free(lease, moment), id=task_id, run_id=run_id, state=TaskState.PENDING
    ).update(expires_at=expires_at, lease_holder=lease.holder, lease_until=lease.until(moment))
    return updated == 1


async def undelivered_outcomes(
    moment: dt.datetime, limit: int, exclude: Collection[int] = (), lease: Lease = LOCAL
) -> list[Task]:
    """Settled tasks whose outcome the user has not been sent yet and that are not backing off
    after a failed send, oldest first, leaving out the ids in `exclude` and the chats another
    instance is delivering to."""
    query = Task.filter(
        Q(deliver_after__isnull=True) | Q(deliver_after__lte=moment),
        state__in=FINISHED_STATES,
        notification_sent=False,
        undeliverable=False,
    ).exclude(chat_id__in=chats_held_by_others(lease, moment))
    if exclude:
        query = query.exclude(id__in=list(exclude))
    return await query.order_by("completed_at", "id").limit(limit)


#: What the delivery loop needs of an outcome to queue it (a claim reads the rest).
_QUEUED_COLUMNS = "id, run_id, state, chat_id, send_started_at, delivery_attempts"


async def outcomes_to_queue(
    moment: dt.datetime, limit: int, exclude: Collection[int] = (), lease: Lease = LOCAL
) -> list[Task]:
    """`undelivered_outcomes` in one prebuilt statement, each task with only what a delivery
    queue needs (`_QUEUED_COLUMNS`): the delivery loop scans after nearly every outcome."""
    excluded = list(exclude)
    sql = f"""SELECT {_QUEUED_COLUMNS} FROM tasks
    WHERE (deliver_after IS NULL OR deliver_after <= ?)
    AND state IN ({_FINISHED_SQL}) AND notification_sent = FALSE AND undeliverable = FALSE
    AND chat_id NOT IN (SELECT chat_id FROM chat_leases WHERE "until" > ? AND holder <> ?)
    {f"AND id NOT IN ({placeholders(len(excluded))})" if excluded else ""}
    ORDER BY completed_at, id LIMIT ?"""
    rows = await Prebuilt(sql).rows([moment, moment, lease.holder, *excluded, limit])
    return [Task._init_from_db(**row) for row in rows]


_FINISHED_SQL = ", ".join(f"'{state.value}'" for state in FINISHED_STATES)


async def next_delivery_due() -> dt.datetime | None:
    """The earliest time an outcome backing off after a failed send is due again."""
    task = (
        await Task.filter(
            state__in=FINISHED_STATES,
            notification_sent=False,
            undeliverable=False,
            deliver_after__isnull=False,
        )
        .order_by("deliver_after")
        .first()
    )
    return task.deliver_after if task is not None else None


@dataclass(frozen=True)
class OutcomeRef:
    """One outcome of a task: its attempt (run id) and the state it settled in.

    An attempt can have two outcomes: a timeout notice, then the late text of the same run.
    Bookkeeping of the first must never touch the second, so every delivery write names both.
    """

    task_id: int
    run_id: str
    state: TaskState

    @classmethod
    def of(cls, task: Task) -> OutcomeRef:
        return cls(task.id, task.run_id, task.state)


def _undelivered(ref: OutcomeRef) -> QuerySet[Task]:
    # Only this outcome, and only while it is still waiting for delivery.
    return Task.filter(
        id=ref.task_id,
        run_id=ref.run_id,
        state=ref.state,
        notification_sent=False,
        undeliverable=False,
    )


async def claim_outcome(ref: OutcomeRef) -> Task | None:
    """This attempt's outcome, fresh from the database, if it still awaits delivery."""
    return await _undelivered(ref).first()


async def claim_for_send(ref: OutcomeRef) -> Task | None:
    """`claim_outcome` and `mark_in_flight` in one statement: the outcome as stored, if it
    still awaits delivery, now marked as being sent.

    A send that was already marked (the process died with it on the wire) is flagged
    `resent_after_crash` by the same statement: the user may see that text twice.
    """
    (claimed,) = await claim_for_send_many([ref])
    return claimed


async def claim_for_send_many(refs: list[OutcomeRef]) -> list[Task | None]:
    """`claim_for_send` for several outcomes in one statement: for each, as it stands now."""
    unique = list(dict.fromkeys(refs))
    rows = await _claim_sql(len(unique)).rows(
        [now(), *(ref.task_id for ref in unique), *_refs_values(unique)]
    )
    claimed = {_ref_of_row(row): Task._init_from_db(**row) for row in rows}
    return [claimed.get(ref) for ref in refs]


def _ref_of_row(row: dict[str, Any]) -> OutcomeRef:
    return OutcomeRef(int(row["id"]), row["run_id"], TaskState(row["state"]))


@functools.lru_cache(maxsize=64)
def _claim_sql(count: int) -> Prebuilt:
    return Prebuilt(
        f"""UPDATE tasks SET send_started_at = ?,
        resent_after_crash = CASE WHEN send_started_at IS NULL THEN resent_after_crash ELSE TRUE END
        WHERE {_undelivered_sql(count)} RETURNING *"""
    )


def _undelivered_sql(count: int) -> str:
    """Only these outcomes (`count` of them: each id, run id and state), and only while they
    still wait for delivery (as `_undelivered`)."""
    ids = placeholders(count)
    each = " OR ".join(["(id = ? AND run_id = ? AND state = ?)"] * count)
    return f"id IN ({ids}) AND ({each}) AND notification_sent = FALSE AND undeliverable = FALSE"


def _refs_values(refs: list[OutcomeRef]) -> list[object]:
    return [value for ref in refs for value in (ref.task_id, ref.run_id, ref.state.value)]


async def mark_in_flight(ref: OutcomeRef) -> None:
    """A request carrying (part of) the outcome is about to leave; cleared when it ends."""
    await _undelivered(ref).update(send_started_at=now())


async def mark_resent_after_crash(ref: OutcomeRef) -> None:
    """A send was in flight when the process died: the user may see this text twice."""
    await _undelivered(ref).update(resent_after_crash=True)


async def part_sent(ref: OutcomeRef, parts: int, *, timed_out: bool = False) -> None:
    """`parts` pieces of the outcome are sent (or, timed out, possibly sent): never resend them."""
    values: dict[str, object] = {"delivered_parts": parts, "send_started_at": None}
    if timed_out:
        values["send_timed_out"] = True
    await _undelivered(ref).update(**values)


async def mark_delivered(
    ref: OutcomeRef, *, parts: int | None = None, timed_out: bool = False
) -> bool:
    """Record that this attempt's outcome reached the user (only that attempt's): with its
    pieces sent (`parts`) and whether a send timed out, when the last piece is recorded here."""
    (marked,) = await mark_delivered_many([(ref, parts, timed_out)])
    return marked


async def mark_delivered_many(items: list[tuple[OutcomeRef, int | None, bool]]) -> list[bool]:
    """`mark_delivered` for several outcomes (ref, parts, timed out): one statement for all
    that share their parts and timed out (usually all); whether each was marked."""
    moment = now()
    groups: dict[tuple[int | None, bool], list[OutcomeRef]] = {}
    for ref, parts, timed_out in items:
        groups.setdefault((parts, timed_out), []).append(ref)
    marked: set[OutcomeRef] = set()
    for (parts, timed_out), refs in groups.items():
        unique = list(dict.fromkeys(refs))
        rows = await _delivered_sql(len(unique)).rows(
            [parts, timed_out, moment, *(ref.task_id for ref in unique), *_refs_values(unique)]
        )
        marked.update(_ref_of_row(row) for row in rows)
    answers = []
    for ref, _, _ in items:
        answers.append(ref in marked)
        marked.discard(ref)  # a second mark of the same outcome changed nothing
    return answers


@functools.lru_cache(maxsize=64)
def _delivered_sql(count: int) -> Prebuilt:
    return Prebuilt(
        f"""UPDATE tasks SET delivered_parts = COALESCE(?, delivered_parts),
        send_timed_out = (send_timed_out OR ?), notification_sent = TRUE, notified_at = ?,
        send_started_at = NULL, deliver_after = NULL, delivery_attempts = delivery_attempts + 1
        WHERE {_undelivered_sql(count)} RETURNING id, run_id, state"""
    )


async def mark_undeliverable(ref: OutcomeRef) -> bool:
    updated = await _undelivered(ref).update(
        undeliverable=True, send_started_at=None, delivery_attempts=F("delivery_attempts") + 1
    )
    return updated == 1


async def defer_delivery(ref: OutcomeRef, until: dt.datetime) -> None:
    """A send failed (network fault, Telegram error): count it and try again after `until`."""
    await _undelivered(ref).update(
        deliver_after=until, send_started_at=None, delivery_attempts=F("delivery_attempts") + 1
    )


async def change_payload(ref: OutcomeRef, level: int) -> None:
    """Telegram refused the payload (BadRequest): the next send uses payload `level`."""
    await _undelivered(ref).update(
        payload_level=level, send_started_at=None, delivery_attempts=F("delivery_attempts") + 1
    )


async def end_send(ref: OutcomeRef) -> None:
    """The send in flight ended without settling the delivery (e.g. a RetryAfter)."""
    await Task.filter(id=ref.task_id, run_id=ref.run_id, state=ref.state).update(
        send_started_at=None
    )


async def progress_to_show(moment: dt.datetime, limit: int) -> list[Task]:
    """Running tasks whose acknowledgement shows older progress and may be edited now."""
    return (
        await Task.filter(
            Q(progress_edited_at__isnull=True) | Q(progress_edited_at__lte=moment),
            state=TaskState.PROCESSING,
            ack_message_id__isnull=False,
            progress__gt=F("progress_shown"),
        )
        .order_by("id")
        .limit(limit)
    )


async def claim_progress_edit(task_id: int, run_id: str, since: dt.datetime) -> bool:
    """Claim the next progress edit of the task's acknowledgement, if it was last edited
    before `since`; False when another instance (or an earlier scan) just took it."""
    taken = await Task.filter(
        Q(progress_edited_at__isnull=True) | Q(progress_edited_at__lte=since),
        id=task_id,
        run_id=run_id,
    ).update(progress_edited_at=now())
    return taken == 1


async def mark_progress_shown(task_id: int, run_id: str, progress: int) -> None:
    await Task.filter(id=task_id, run_id=run_id).update(
        progress_shown=progress, progress_edited_at=now()
    )


_USER = Prebuilt("SELECT * FROM users WHERE id = ?")


async def get_user(user_id: int) -> User | None:
    # Read for nearly every text delivered (a user's language and choices): prebuilt SQL.
    rows = await _USER.rows([user_id])
    return User._init_from_db(**rows[0]) if rows else None


async def get_user_task(user_id: int, task_id: int) -> Task | None:
    return await Task.get_or_none(id=task_id, user_id=user_id)


async def tasks_with_ack(chat_id: int, ack_message_id: int | None) -> list[Task]:
    if ack_message_id is None:
        return []
    return await Task.filter(chat_id=chat_id, ack_message_id=ack_message_id).order_by("id")


async def is_pending_run(task_id: int, run_id: str) -> bool:
    """True while `run_id` is the task's current attempt and it has not been started."""
    return await Task.exists(id=task_id, run_id=run_id, state=TaskState.PENDING)


# --- the inbox of Telegram updates ----------------------------------------------------------

#: Handled updates kept below the newest one (the newest always stays: it is the offset).
INBOX_KEEP = 1000


async def store_updates(updates: list[tuple[int, str]], lease: Lease | None = None) -> set[int]:
    """Keep (update_id, JSON) pairs until handled, claimed by the instance that stored them
    (`lease`: it handles them next; None: any instance may); the ids stored now. An update
    stored before (by this instance or another) is left as it is, to whoever stored it."""
    async with in_transaction():
        ids = [update_id for update_id, _ in updates]
        known = {row.update_id for row in await InboxUpdate.filter(update_id__in=ids)}
        fresh = [
            InboxUpdate(
                update_id=update_id,
                payload=payload,
                claimed_by=lease.holder if lease else None,
                claim_until=lease.until() if lease else None,
            )
            for update_id, payload in updates
            if update_id not in known
        ]
        if fresh:
            await InboxUpdate.bulk_create(fresh)
        newest = max(u for u, _ in updates)
        await InboxUpdate.filter(handled=True, update_id__lt=newest - INBOX_KEEP).delete()
    return {update.update_id for update in fresh}


async def update_is_stored(update_id: int) -> bool:
    return await InboxUpdate.exists(update_id=update_id)


async def mark_update_handled(update_id: int) -> None:
    await InboxUpdate.filter(update_id=update_id).update(
        handled=True, claimed_by=None, claim_until=None
    )


async def set_update_aside(update_id: int, kind: str) -> None:
    """Mark an update poisoned (and handled, so it is never replayed). Its content is dropped:
    the operator gets its id and type, which is all a log line may show."""
    placeholder = json.dumps({"update_id": update_id, "poisoned": kind})
    async with in_transaction():
        updated = await InboxUpdate.filter(update_id=update_id).update(
            handled=True, poisoned=True, payload=placeholder
        )
        if not updated:
            await InboxUpdate.create(
                update_id=update_id, payload=placeholder, handled=True, poisoned=True
            )


async def newest_update_id() -> int | None:
    newest = await InboxUpdate.all().order_by("-update_id").first()
    return newest.update_id if newest is not None else None


_TASKS_OF_MESSAGE = Prebuilt(
    "SELECT * FROM tasks WHERE chat_id = ? AND request_message_id = ? ORDER BY id"
)


async def tasks_of_message(chat_id: int, request_message_id: int) -> list[Task]:
    """The tasks made from one message (to handle a replayed update only once)."""
    # Asked for every message, almost always a new one (none): prebuilt SQL, one statement.
    rows = await _TASKS_OF_MESSAGE.rows([chat_id, request_message_id])
    return [Task._init_from_db(**row) for row in rows]


# --- quotas and access ----------------------------------------------------------------------


async def active_task_count(user_id: int) -> int:
    """The user's tasks still waiting for a run or running."""
    return await Task.filter(
        user_id=user_id, state__in=(TaskState.PENDING, TaskState.PROCESSING)
    ).count()


async def runs_since(user_id: int, since: dt.datetime, limit: int) -> list[dt.datetime]:
    """When the user's runs (first attempts and retries) since `since` were stored, oldest
    first, at most the `limit` newest of them."""
    runs = (
        await RunSpent.filter(user_id=user_id, spent_at__gt=since)
        .order_by("-spent_at")
        .limit(limit)
        .values_list("spent_at", flat=True)
    )
    return sorted(runs)  # type: ignore[arg-type]


async def access_changes() -> list[tuple[int, bool]]:
    """(user id, blocked) for every user an admin blocked or unblocked."""
    rows = await UserAccess.all().values_list("user_id", "blocked")
    return [(int(user_id), bool(blocked)) for user_id, blocked in rows]


async def set_blocked(user_id: int, *, blocked: bool, changed_by: int) -> None:
    await UserAccess.update_or_create(
        user_id=user_id, defaults={"blocked": blocked, "changed_by": changed_by}
    )


# --- figures for /stats ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    user_id: int
    state: TaskState
    error_kind: str | None
    checks: int
    created_at: dt.datetime
    completed_at: dt.datetime | None


async def task_rows_since(since: dt.datetime) -> list[TaskRow]:
    rows = await Task.filter(created_at__gte=since).values_list(
        "user_id", "state", "error_kind", "checks", "created_at", "completed_at"
    )
    return [TaskRow(*row) for row in rows]


async def runs_started_since(since: dt.datetime) -> int:
    """Coze runs started (first attempts and retries) since `since`."""
    return await TaskRun.filter(created_at__gte=since, execute_id__isnull=False).count()


async def task_counts_by_state() -> dict[str, int]:
    """How many tasks are in each state (every state named, 0 when none)."""
    counts = {state.value: 0 for state in TaskState}
    rows = (
        await Task.all().group_by("state").annotate(count=Count("id")).values_list("state", "count")
    )
    for state, count in rows:
        counts[str(state)] = int(count)
    return counts


async def outbox_backlog() -> int:
    return await Task.filter(
        state__in=FINISHED_STATES, notification_sent=False, undeliverable=False
    ).count()


async def pending_count() -> int:
    return await Task.filter(state=TaskState.PENDING).count()


async def usernames(user_ids: list[int]) -> dict[int, str | None]:
    rows = await User.filter(id__in=user_ids).values_list("id", "username")
    return {int(user_id): username for user_id, username in rows}

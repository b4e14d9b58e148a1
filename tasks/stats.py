"""Figures for the admins' /stats: how the bot did today and over the last 7 days."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from dataclasses import dataclass

from tortoise.timezone import now

from storage import repository
from storage.models import TaskState

TOP = 5


@dataclass(frozen=True)
class PeriodStats:
    tasks: int
    completed: int
    finished: int  # completed, failed or timed out
    median_seconds_to_text: float | None
    coze_calls: int  # runs started plus run-history checks
    failure_reasons: list[tuple[str, int]]  # most frequent first
    busiest_users: list[tuple[int, str | None, int]]  # (user id, username, tasks)

    @property
    def success_rate(self) -> float | None:
        return self.completed / self.finished if self.finished else None


@dataclass(frozen=True)
class Stats:
    today: PeriodStats
    week: PeriodStats
    outbox_backlog: int  # outcomes not yet sent
    waiting_for_a_run: int  # tasks pending


async def collect_stats(moment: dt.datetime | None = None) -> Stats:
    moment = moment or now()
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return Stats(
        today=await _period(midnight),
        week=await _period(moment - dt.timedelta(days=7)),
        outbox_backlog=await repository.outbox_backlog(),
        waiting_for_a_run=await repository.pending_count(),
    )


async def _period(since: dt.datetime) -> PeriodStats:
    rows = await repository.task_rows_since(since)
    finished = [row for row in rows if row.state in _FINISHED]
    completed = [row for row in finished if row.state == TaskState.COMPLETED]
    durations = [
        (row.completed_at - row.created_at).total_seconds()
        for row in completed
        if row.completed_at is not None
    ]
    reasons = Counter(
        "timeout" if row.state == TaskState.TIMEOUT else (row.error_kind or "unknown")
        for row in finished
        if row.state != TaskState.COMPLETED
    )
    users = Counter(row.user_id for row in rows)
    names = await repository.usernames([user_id for user_id, _ in users.most_common(TOP)])
    return PeriodStats(
        tasks=len(rows),
        completed=len(completed),
        finished=len(finished),
        median_seconds_to_text=statistics.median(durations) if durations else None,
        coze_calls=await repository.runs_started_since(since) + sum(row.checks for row in rows),
        failure_reasons=reasons.most_common(TOP),
        busiest_users=[
            (user_id, names.get(user_id), count) for user_id, count in users.most_common(TOP)
        ],
    )


_FINISHED = (TaskState.COMPLETED, TaskState.FAILED, TaskState.TIMEOUT)

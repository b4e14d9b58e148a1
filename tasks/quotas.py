"""Per-user quotas on tasks: how many at once, how many a day. Admins are exempt.

A task counts from the moment it is stored, and every Coze run counts: a Retry is a task for
these limits. An answer that costs no Coze run costs no quota.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from tortoise.timezone import now

from storage import repository

DAY = dt.timedelta(hours=24)


class QuotaRefusal(Enum):
    TOO_MANY_ACTIVE = "too_many_active"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True)
class Allowance:
    """How many new tasks (runs) the user may start now, and why not more."""

    room: int  # -1: no limit
    bound_by: QuotaRefusal | None = None  # the limit that sets the room
    active: int = 0  # tasks of the user still waiting or running
    next_possible_at: dt.datetime | None = None  # when the daily limit lets one more through

    def allows(self, count: int) -> int:
        return count if self.room < 0 else min(count, self.room)

    @property
    def refusal(self) -> QuotaRefusal | None:
        """Why no task at all may start now (None: at least one may)."""
        return self.bound_by if self.room == 0 else None


UNLIMITED = Allowance(room=-1)


@dataclass(frozen=True)
class Quotas:
    max_active_tasks_per_user: int = 0  # 0: no limit
    max_tasks_per_user_per_day: int = 0

    async def allowance(self, user_id: int) -> Allowance:
        room = -1
        bound_by: QuotaRefusal | None = None
        active = 0
        next_possible: dt.datetime | None = None
        if self.max_active_tasks_per_user:
            active = await repository.active_task_count(user_id)
            room = max(0, self.max_active_tasks_per_user - active)
            bound_by = QuotaRefusal.TOO_MANY_ACTIVE
        if self.max_tasks_per_user_per_day and room != 0:
            since = now() - DAY
            runs = await repository.runs_since(user_id, since, self.max_tasks_per_user_per_day)
            day_room = max(0, self.max_tasks_per_user_per_day - len(runs))
            if room < 0 or day_room < room:
                room, bound_by = day_room, QuotaRefusal.DAILY_LIMIT
            if day_room == 0:
                # The oldest run of the window leaves it first, freeing one task.
                next_possible = runs[0] + DAY
        return Allowance(room, bound_by, active, next_possible)

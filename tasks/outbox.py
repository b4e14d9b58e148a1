"""The outbox: what awaits sending to users, and the bookkeeping of each send.

Outcomes are stored before they are sent; this is the delivery side's view of them. Every
method names one attempt (task id + run id), so bookkeeping for an attempt that a retry has
replaced changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from tortoise.timezone import now

from storage import Task, claims, repository
from storage.claims import LOCAL, Lease
from storage.repository import OutcomeRef
from tasks.metrics import Metrics
from tasks.outcome_writer import GroupCommit


class Outbox:
    def __init__(self, metrics: Metrics | None = None, lease: Lease = LOCAL) -> None:
        self._metrics = metrics or Metrics()
        self._lease = lease
        # The marks of every send (in flight, delivered), from all chats at once, share
        # commits: one transaction takes whatever is waiting when the last one ends.
        self.writes = GroupCommit("delivery-writes")

    async def due(self, limit: int, exclude: Collection[int] = ()) -> list[Task]:
        """Outcomes to send now, oldest first (those backing off after a failure wait), except
        the tasks in `exclude` (already being sent) and the chats another instance is
        delivering to."""
        return await repository.outcomes_to_queue(now(), limit, exclude, self._lease)

    async def next_due(self) -> dt.datetime | None:
        return await repository.next_delivery_due()

    async def take_chat(self, chat_id: int) -> bool:
        """Deliver to this chat from this instance (one at a time per chat, in order)."""
        return await claims.take_chat(chat_id, self._lease)

    async def take_chats(self, chat_ids: Collection[int]) -> set[int]:
        """`take_chat` for several chats in one statement: those now delivered from here."""
        return await claims.take_chats(chat_ids, self._lease)

    async def release_chat(self, chat_id: int) -> None:
        await claims.release_chat(chat_id, self._lease)

    async def claim(self, task: Task) -> Task | None:
        """The outcome as stored now, or None when it no longer awaits delivery (e.g. retried).

        A claimed outcome whose `send_started_at` is set was being sent when the process
        stopped: the caller decides what to do about a possible duplicate.
        """
        return await repository.claim_outcome(OutcomeRef.of(task))

    async def claim_for_send(self, task: Task) -> Task | None:
        """`claim` and `in_flight` in one statement, committed with other chats' marks: the
        outcome as stored, if it still awaits delivery, now marked as being sent (and flagged
        `resent_after_crash` if a send was already marked: the process died during it)."""
        return await self.writes.write(repository.claim_for_send_many, OutcomeRef.of(task))

    async def in_flight(self, task: Task) -> None:
        await repository.mark_in_flight(OutcomeRef.of(task))

    async def end_send(self, task: Task) -> None:
        await repository.end_send(OutcomeRef.of(task))

    async def resent_after_crash(self, task: Task) -> None:
        await repository.mark_resent_after_crash(OutcomeRef.of(task))

    async def part_sent(self, task: Task, parts: int, *, timed_out: bool = False) -> None:
        await repository.part_sent(OutcomeRef.of(task), parts, timed_out=timed_out)

    async def delivered(self, task: Task, *, release_chat: bool = False) -> bool:
        """The outcome reached the user: its last piece (`task.delivered_parts`, and whether
        a send timed out) is recorded with it, in one commit shared with other chats' marks;
        with `release_chat`, the chat's claim is let go in the same transaction."""
        mark = _Delivered(
            OutcomeRef.of(task),
            task.delivered_parts,
            task.send_timed_out,
            task.chat_id if release_chat else None,
        )
        done = await self.writes.write(self._deliver_many, mark)
        if done:
            self._metrics.delivery("delivered")
            if task.completed_at is not None:
                self._metrics.delivered((now() - task.completed_at).total_seconds())
                if task.started_at is not None and task.reused_from is None:
                    self._metrics.run_finished(
                        (task.completed_at - task.started_at).total_seconds()
                    )
        return done

    async def _deliver_many(self, marks: list[_Delivered]) -> list[bool]:
        """The delivered marks of several chats, and the chats let go, in two statements."""
        done = await repository.mark_delivered_many(
            [(mark.ref, mark.parts, mark.timed_out) for mark in marks]
        )
        await claims.release_chats(
            [mark.release for mark in marks if mark.release is not None], self._lease
        )
        return done

    # Each delivery result is counted once it is recorded, as the database has it.

    async def undeliverable(self, task: Task) -> bool:
        done = await repository.mark_undeliverable(OutcomeRef.of(task))
        if done:
            self._metrics.delivery("undeliverable")
        return done

    async def defer(self, task: Task, seconds: float) -> None:
        await repository.defer_delivery(OutcomeRef.of(task), now() + dt.timedelta(seconds=seconds))
        self._metrics.delivery("send_failed")

    async def change_payload(self, task: Task, level: int) -> None:
        await repository.change_payload(OutcomeRef.of(task), level)
        self._metrics.delivery("payload_refused")

    async def progress_to_show(self, min_interval: float, limit: int) -> list[Task]:
        return await repository.progress_to_show(now() - dt.timedelta(seconds=min_interval), limit)

    async def claim_progress_edit(self, task: Task, min_interval: float) -> bool:
        since = now() - dt.timedelta(seconds=min_interval)
        return await repository.claim_progress_edit(task.id, task.run_id, since)

    async def progress_shown(self, task: Task, progress: int) -> None:
        await repository.mark_progress_shown(task.id, task.run_id, progress)

    async def tasks_acknowledged_by(self, task: Task) -> list[Task]:
        """The tasks that share `task`'s acknowledgement message (one per link of a message)."""
        return await repository.tasks_with_ack(task.chat_id, task.ack_message_id)


@dataclass(frozen=True)
class _Delivered:
    ref: OutcomeRef
    parts: int
    timed_out: bool
    release: int | None  # the chat to let go with the mark

"""Claims across instances: leases with an expiry, taken with one conditional UPDATE.

Several instances of the bot share one database. Each piece of background work (starting a
task's run, checking its run history, handling a stored Telegram update, delivering to a chat)
is claimed before it is done: the claim names the instance and lasts until `until`. Another
instance takes the work only once that moment has passed, so a killed instance's work is taken
over within one lease; the holder renews its leases while it works, and an instance restarted
under the same name takes its own claims back at once.

Leases, not `SELECT ... FOR UPDATE SKIP LOCKED`: the work behind a claim is a call to Coze or
Telegram that can take seconds, and a row lock would hold a transaction (and a pooled
connection) open for as long, with nothing recorded until it commits. A lease is a plain row
value: it works the same on SQLite and PostgreSQL, each step of the work commits on its own, and
the claim survives a dropped connection. The price is the lease's length: work whose holder
died waits that long (`cluster.lease_seconds`) before another instance picks it up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from tortoise.expressions import Q, Subquery
from tortoise.timezone import now

from storage.models import ChatLease, InboxUpdate, Task
from storage.prebuilt import Prebuilt, placeholders


@dataclass(frozen=True)
class Lease:
    """Claims made by one instance (`holder`), each lasting `seconds` unless renewed."""

    holder: str
    seconds: float

    def until(self, moment: dt.datetime | None = None) -> dt.datetime:
        return (moment or now()) + dt.timedelta(seconds=self.seconds)


#: For single-process use (tools, tests of one component): one holder, a minute's leases.
LOCAL = Lease("local", 60.0)


def task_free(lease: Lease, moment: dt.datetime) -> Q:
    """Tasks nobody else holds a live claim on."""
    return Q(lease_until__isnull=True) | Q(lease_until__lte=moment) | Q(lease_holder=lease.holder)


def update_free(lease: Lease, moment: dt.datetime) -> Q:
    return Q(claim_until__isnull=True) | Q(claim_until__lte=moment) | Q(claimed_by=lease.holder)


def chats_held_by_others(lease: Lease, moment: dt.datetime) -> Subquery:
    """The chats another instance is delivering to now (to leave them out of a scan)."""
    return Subquery(
        ChatLease.filter(until__gt=moment).exclude(holder=lease.holder).values("chat_id")
    )


RELEASED: dict[str, object] = {"lease_holder": None, "lease_until": None}


async def renew_tasks(ids: Collection[int], lease: Lease) -> None:
    if ids:
        await Task.filter(id__in=list(ids), lease_holder=lease.holder).update(
            lease_until=lease.until()
        )


# --- chats ----------------------------------------------------------------------------------


async def take_chat(chat_id: int, lease: Lease) -> bool:
    """Claim delivery to the chat; False while another instance holds it."""
    return chat_id in await take_chats([chat_id], lease)


async def take_chats(chat_ids: Collection[int], lease: Lease) -> set[int]:
    """Claim delivery to these chats, in one statement; the chats now held (not those another
    instance holds)."""
    wanted = list(dict.fromkeys(chat_ids))
    if not wanted:
        return set()
    moment = now()
    until = lease.until(moment)
    rows = await Prebuilt(
        f"""INSERT INTO chat_leases (chat_id, holder, "until")
        VALUES {", ".join(["(?, ?, ?)"] * len(wanted))}
        ON CONFLICT (chat_id) DO UPDATE SET holder = excluded.holder, "until" = excluded."until"
        WHERE chat_leases."until" <= ? OR chat_leases.holder = ?
        RETURNING chat_id"""
    ).rows([*(v for chat in wanted for v in (chat, lease.holder, until)), moment, lease.holder])
    return {int(row["chat_id"]) for row in rows}


async def renew_chats(chat_ids: Collection[int], lease: Lease) -> None:
    if chat_ids:
        await ChatLease.filter(chat_id__in=list(chat_ids), holder=lease.holder).update(
            until=lease.until()
        )


async def release_chat(chat_id: int, lease: Lease) -> None:
    await release_chats([chat_id], lease)


async def release_chats(chat_ids: Collection[int], lease: Lease) -> None:
    """Let these chats go (those this instance holds), in one statement."""
    wanted = list(dict.fromkeys(chat_ids))
    if wanted:
        chats = placeholders(len(wanted))
        await Prebuilt(f"DELETE FROM chat_leases WHERE holder = ? AND chat_id IN ({chats})").count(
            [lease.holder, *wanted]
        )


async def release_all(lease: Lease) -> None:
    """At a clean stop: what this instance holds is free for the others at once."""
    await ChatLease.filter(holder=lease.holder).delete()
    await Task.filter(lease_holder=lease.holder).update(**RELEASED)
    await InboxUpdate.filter(claimed_by=lease.holder, handled=False).update(
        claimed_by=None, claim_until=None
    )


# --- stored Telegram updates ----------------------------------------------------------------


async def renew_updates(update_ids: Collection[int], lease: Lease) -> None:
    if update_ids:
        await InboxUpdate.filter(
            update_id__in=list(update_ids), claimed_by=lease.holder, handled=False
        ).update(claim_until=lease.until())


async def claim_unhandled_updates(
    lease: Lease, limit: int, exclude: Collection[int] = ()
) -> list[InboxUpdate]:
    """Updates stored but not handled whose claim has run out (their instance died or
    stopped), or that this instance held before a restart, oldest first, now claimed by this
    instance; leaving out `exclude` (being handled here now)."""
    moment = now()
    query = InboxUpdate.filter(update_free(lease, moment), handled=False)
    if exclude:
        query = query.exclude(update_id__in=list(exclude))
    claimed = []
    for update in await query.order_by("update_id").limit(limit):
        taken = await InboxUpdate.filter(
            update_free(lease, moment), update_id=update.update_id, handled=False
        ).update(claimed_by=lease.holder, claim_until=lease.until(moment))
        if taken == 1:
            claimed.append(update)
    return claimed

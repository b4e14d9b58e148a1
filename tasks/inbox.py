"""The inbox: Telegram updates are stored before Telegram is told they were received.

getUpdates hands over each update until a later call's offset confirms it; after that only we
have it. So an update is stored before the next getUpdates call, and marked handled once its
handler has run. One taken but not handled when the process dies is handled at the next start,
and polling resumes after the newest stored update, so none is handled twice either. An update
that cannot be stored or handled is set aside as poisoned, so it never blocks the others.
"""

from __future__ import annotations

from storage import InboxUpdate, repository


class Inbox:
    async def store(self, updates: list[tuple[int, str]]) -> None:
        """Keep (update_id, JSON) pairs; call before the next getUpdates confirms them."""
        if updates:
            await repository.store_updates(updates)

    async def unhandled(self) -> list[InboxUpdate]:
        """Updates stored but not handled (left by a stop or a crash), oldest first."""
        return await repository.unhandled_updates()

    async def is_stored(self, update_id: int) -> bool:
        return await repository.update_is_stored(update_id)

    async def handled(self, update_id: int) -> None:
        await repository.mark_update_handled(update_id)

    async def set_aside(self, update_id: int, kind: str) -> None:
        """Poisoned: never handled again; only its id and type are kept for the operator."""
        await repository.set_update_aside(update_id, kind)

    async def next_offset(self) -> int | None:
        """The getUpdates offset after the newest update ever stored (None: none stored)."""
        newest = await repository.newest_update_id()
        return None if newest is None else newest + 1

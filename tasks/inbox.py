"""The inbox: Telegram updates are stored before Telegram is told they were received.

getUpdates hands over each update until a later call's offset confirms it; after that only we
have it (a webhook request's 200 says the same). So an update is stored first, claimed by the
instance that stored it, and marked handled once its handler has run. One stored but not
handled when its instance died is handled later: by the same instance at its next start, or by
another once the claim has run out (tasks.claims); polling resumes after the newest stored
update, so none is handled twice either. An update that cannot be stored or handled is set
aside as poisoned, so it never blocks the others.
"""

from __future__ import annotations

from storage import InboxUpdate, claims, repository
from tasks.claims import Claims

#: Unhandled updates taken over per look.
REPLAY_BATCH = 500


class Inbox:
    def __init__(self, claims: Claims | None = None) -> None:
        self._claims = claims or Claims()

    async def store(self, updates: list[tuple[int, str]]) -> set[int]:
        """Keep (update_id, JSON) pairs, claimed by this instance; call before the next
        getUpdates confirms them (or before a webhook request is answered). The ids stored
        now: one stored before (by another instance, say) is not this instance's to handle."""
        if not updates:
            return set()
        return await repository.store_updates(updates, self._claims.lease)

    def handling(self, update_id: int) -> None:
        """This instance handles the update now: its claim is kept alive until handled."""
        self._claims.updates.add(update_id)

    async def unhandled(self) -> list[InboxUpdate]:
        """Updates stored but not handled whose instance stopped or died (this one before a
        restart included), oldest first, now claimed by this instance."""
        return await claims.claim_unhandled_updates(
            self._claims.lease, REPLAY_BATCH, exclude=self._claims.updates
        )

    async def is_stored(self, update_id: int) -> bool:
        return await repository.update_is_stored(update_id)

    async def handled(self, update_id: int) -> None:
        await repository.mark_update_handled(update_id)
        self._claims.updates.discard(update_id)

    async def set_aside(self, update_id: int, kind: str) -> None:
        """Poisoned: never handled again; only its id and type are kept for the operator."""
        await repository.set_update_aside(update_id, kind)
        self._claims.updates.discard(update_id)

    async def next_offset(self) -> int | None:
        """The getUpdates offset after the newest update ever stored (None: none stored)."""
        newest = await repository.newest_update_id()
        return None if newest is None else newest + 1

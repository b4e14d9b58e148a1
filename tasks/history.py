"""A user's own tasks: pages of them, one by its number, a search of their texts, deletion.

Every call names the user, and touches that user's tasks only.
"""

from __future__ import annotations

from storage import Task, history, repository
from storage.history import SearchHit, TaskPage

PAGE_SIZE = 10


class History:
    async def page(
        self, user_id: int, *, older_than: int | None = None, newer_than: int | None = None
    ) -> TaskPage:
        return await history.tasks_page(
            user_id, before=older_than, after=newer_than, size=PAGE_SIZE
        )

    async def task(self, user_id: int, number: int) -> Task | None:
        return await history.task_by_number(user_id, number)

    async def search(self, user_id: int, words: str, *, limit: int = 10) -> list[SearchHit]:
        return await history.search_texts(user_id, words, limit)

    async def count(self, user_id: int) -> int:
        return await history.count_tasks(user_id)

    async def count_deletable(self, user_id: int) -> tuple[int, int]:
        """(finished tasks, which /forget deletes; tasks still running, which it keeps)."""
        total = await history.count_tasks(user_id)
        running = await repository.active_task_count(user_id)
        return total - running, running

    async def delete(self, user_id: int, number: int) -> bool:
        return await history.delete_task(user_id, number)

    async def forget(self, user_id: int) -> int:
        return await history.forget_user(user_id)

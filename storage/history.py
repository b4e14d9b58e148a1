"""A user's own history: pages of their tasks, one task by its number, search in their texts,
deleting one task or all of them.

Every function takes the user's id and touches that user's rows only. Tasks are named by the
user's own number (`Task.user_number`, #1, #2, ...), never by the table's id. Tasks without a
number (none once migration 0004 has numbered the old ones and new tasks are numbered when
stored) are not listed, counted or found here.

Search (`search_texts`) finds the user's completed tasks whose text contains every word typed,
as a substring, newest first. Each word is one `icontains` filter: `UPPER(text) LIKE UPPER(?)
ESCAPE '\\'` with the word as a parameter and `%`, `_` and `\\` in it escaped, so a word is
always plain text, whatever it holds. Substrings work the same for every script: "视频" (two
characters, Chinese has no spaces) and "cat" in "concatenate" alike, on SQLite and
PostgreSQL. Case is ignored for every letter on PostgreSQL, for ASCII letters on SQLite.

There is no full-text index, on purpose. An FTS5 index on SQLite would have to follow
tasks.result_text through triggers, and Tortoise's SQLite client counts the rows an UPDATE
changed as the connection's total_changes, which includes every row the triggers write: the
state machine's `UPDATE ... WHERE state IN (...)` would report 9 rows for 1, and every
`updated == 1` check would fail (a callback's text would be ignored). Instead, the search
walks one user's tasks newest first through the (user_id, user_number) index and stops at
`limit` hits; its cost is at worst one pass over that user's texts, small for the hundreds
or few thousands of texts a user gathers (30 a day at most by default).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from storage.models import FINISHED_STATES, Task, TaskRun, TaskState, User

#: Tasks on one page of /tasks.
PAGE_SIZE = 10
#: Hits of one /find.
SEARCH_LIMIT = 10
#: About this many characters of text around the first match in a hit's snippet.
SNIPPET_WIDTH = 80
#: A longer query finds nothing (a Telegram message holds 4096 characters; nobody searches
#: with a page of text, and the cost of a query stays bounded).
MAX_QUERY_CHARS = 1000
#: Marks around the matched words in a snippet (plain text, safe in any parse mode).
MARK_OPEN, MARK_CLOSE = "«", "»"

# Task numbers are INTEGER columns: a number outside this range names no task (and would not
# fit PostgreSQL's int4 as a parameter).
_MAX_NUMBER = 2**31 - 1
# Deleting many tasks: ids per statement, well under every database's parameter limit.
_CHUNK = 500


def _valid_number(number: int) -> bool:
    return 1 <= number <= _MAX_NUMBER


# --- pages of tasks -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPage:
    """One page of a user's tasks, newest first.

    `newer` and `older` count the user's tasks on either side of the page, so a page can say
    "#27-#18, 1-10 of 27" and whether Newer/Older buttons make sense. Pages are cut by task
    number (a cursor), not by offset: a task added or deleted meanwhile never makes the next
    page skip or repeat a task.
    """

    tasks: list[Task]
    newer: int  # the user's tasks newer than this page
    older: int  # ... and older than it
    total: int  # all of the user's tasks

    @property
    def has_newer(self) -> bool:
        return self.newer > 0

    @property
    def has_older(self) -> bool:
        return self.older > 0

    @property
    def newer_cursor(self) -> int | None:
        """`after=` for the next newer page, or None when there is none."""
        return self.tasks[0].user_number if self.tasks and self.has_newer else None

    @property
    def older_cursor(self) -> int | None:
        """`before=` for the next older page, or None when there is none."""
        return self.tasks[-1].user_number if self.tasks and self.has_older else None

    @property
    def first_position(self) -> int:
        """The page's first task counted from the newest (1-based; 0 for an empty page)."""
        return self.newer + 1 if self.tasks else 0

    @property
    def last_position(self) -> int:
        return self.newer + len(self.tasks)


def _numbered(user_id: int) -> QuerySet[Task]:
    return Task.filter(user_id=user_id, user_number__isnull=False)


async def tasks_page(
    user_id: int, *, before: int | None = None, after: int | None = None, size: int = PAGE_SIZE
) -> TaskPage:
    """A page of the user's tasks (all states), newest first.

    - no cursor: the newest `size` tasks (what /tasks shows first);
    - `before=N` (Older): the `size` tasks just older than #N;
    - `after=N` (Newer): the `size` tasks just newer than #N; when those reach the user's
      newest task, the newest page itself, so paging Newer always ends on the first page.

    A cursor that finds no task (its tasks were deleted meanwhile, or it is out of range)
    gives the newest page. ValueError for a size below 1 or both cursors at once.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    if before is not None and after is not None:
        raise ValueError("give before or after, not both")
    tasks: list[Task] = []
    if before is not None:
        tasks = await _older_than(user_id, before, size)
    elif after is not None:
        tasks = await _newer_than(user_id, after, size)
    if not tasks:
        tasks = await _numbered(user_id).order_by("-user_number").limit(size)
    total = await count_tasks(user_id)
    if not tasks:
        return TaskPage(tasks=[], newer=0, older=0, total=total)
    newer = await _numbered(user_id).filter(user_number__gt=tasks[0].user_number).count()
    older = await _numbered(user_id).filter(user_number__lt=tasks[-1].user_number).count()
    return TaskPage(tasks=tasks, newer=newer, older=older, total=total)


async def _older_than(user_id: int, number: int, size: int) -> list[Task]:
    if number <= 1:
        return []
    return (
        await _numbered(user_id)
        .filter(user_number__lt=min(number, _MAX_NUMBER))
        .order_by("-user_number")
        .limit(size)
    )


async def _newer_than(user_id: int, number: int, size: int) -> list[Task]:
    """Newest first; empty when they would reach the newest task (the newest page is shown)."""
    if number >= _MAX_NUMBER:
        return []
    found = (
        await _numbered(user_id)
        .filter(user_number__gt=max(number, 0))
        .order_by("user_number")
        .limit(size)
    )
    if (
        not found
        or not await _numbered(user_id).filter(user_number__gt=found[-1].user_number).exists()
    ):
        return []
    return found[::-1]


async def count_tasks(user_id: int) -> int:
    """How many tasks the user has (all states), as /tasks lists them."""
    return int(await _numbered(user_id).count())


async def task_by_number(user_id: int, number: int) -> Task | None:
    """The user's task #number, or None (no such number, or it was deleted)."""
    if not _valid_number(number):
        return None
    return await Task.get_or_none(user_id=user_id, user_number=number)


# --- deleting -------------------------------------------------------------------------------


async def delete_task(user_id: int, number: int) -> bool:
    """Delete the user's task #number with its runs and text.

    False when the user has no such task, or when it is still waiting for or running its
    Coze run (`pending` or `processing`): its run is under way and counts against the bot's
    limits, so it can only be deleted once finished (the caller can tell the two apart with
    `task_by_number`). Numbers are never reused: a later task never becomes #number again.
    """
    if not _valid_number(number):
        return False
    async with in_transaction():
        # Locked (on PostgreSQL) so that a Retry pressed meanwhile waits, then finds nothing.
        task = (
            await Task.filter(user_id=user_id, user_number=number, state__in=FINISHED_STATES)
            .select_for_update()
            .first()
        )
        if task is None:
            return False
        await _delete_tasks([task.id])
    return True


async def forget_user(user_id: int) -> int:
    """Delete all of the user's finished tasks, with their runs and texts, and reset their
    extraction count; return how many tasks were deleted.

    Kept: the user row with their settings (language, always-as-file) and their task counter
    (numbers are never reused), the inbox of Telegram updates, the runs spent for the daily
    quota (`runs_spent`: no link, no text), and tasks still `pending` or `processing` (their
    runs are under way; once they finish, /forget deletes them too).
    """
    async with in_transaction():
        ids: list[int] = await (
            Task.filter(user_id=user_id, state__in=FINISHED_STATES)
            .select_for_update()
            .values_list("id", flat=True)
        )  # type: ignore[assignment]
        for chunk in _chunks(ids, _CHUNK):
            await _delete_tasks(chunk)
        await User.filter(id=user_id).update(extract_count=0, last_extract_at=None)
    return len(ids)


async def _delete_tasks(ids: Sequence[int]) -> None:
    # Runs first, by hand: the foreign key cascades too, but this holds whatever the
    # database enforces.
    await TaskRun.filter(task_id__in=list(ids)).delete()
    await Task.filter(id__in=list(ids)).delete()


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    task: Task
    #: About SNIPPET_WIDTH characters of the text around the first match, whitespace folded,
    #: "…" where cut, the matched words between « and ». Plain text, not HTML.
    snippet: str


def search_terms(words: str) -> list[str]:
    """The distinct words of a query (split at any whitespace), in the order typed.

    Empty when there is nothing to search for, when the query is longer than MAX_QUERY_CHARS,
    or when a word holds a character no stored text can hold (NUL, a lone surrogate).
    """
    if len(words) > MAX_QUERY_CHARS:
        return []
    terms: list[str] = []
    seen: set[str] = set()
    for term in words.split():
        if "\x00" in term or not _encodable(term):
            return []
        key = term.casefold()
        if key not in seen:
            seen.add(key)
            terms.append(term)
    return terms


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def search_texts(user_id: int, words: str, limit: int = SEARCH_LIMIT) -> list[SearchHit]:
    """The user's completed tasks whose text contains every word of `words` (split at
    whitespace; each a plain substring, case ignored), newest first, at most `limit`, each
    with a snippet around its first match.

    Input that cannot match (nothing but spaces, longer than MAX_QUERY_CHARS) gives no hits;
    no input raises.
    """
    terms = search_terms(words)
    if not terms or limit < 1:
        return []
    query = _numbered(user_id).filter(state=TaskState.COMPLETED, result_text__isnull=False)
    for term in terms:
        query = query.filter(result_text__icontains=term)
    tasks: list[Task] = await query.order_by("-user_number").limit(limit)
    return [SearchHit(task, make_snippet(task.result_text or "", terms)) for task in tasks]


def make_snippet(text: str, terms: Sequence[str], width: int = SNIPPET_WIDTH) -> str:
    """About `width` characters of `text` around the first match of any term, whitespace
    folded to single spaces, "…" where cut, every match inside marked « »."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    pattern = _terms_pattern(terms)
    first = pattern.search(flat) if pattern is not None else None
    # The first match a third of the way in: some context before it, more after.
    start = 0 if first is None else max(0, first.start() - max(0, width - len(first.group())) // 3)
    end = min(len(flat), start + width)
    start = max(0, end - width)
    if pattern is not None:  # never cut a match in two
        for match in pattern.finditer(flat):
            if match.start() < start < match.end():
                start = match.start()
            if match.start() < end < match.end():
                end = match.end()
    start, end = _word_edges(flat, start, end, first)
    piece = flat[start:end]
    if pattern is not None:
        piece = pattern.sub(lambda m: f"{MARK_OPEN}{m.group()}{MARK_CLOSE}", piece)
    return ("…" if start > 0 else "") + piece + ("…" if end < len(flat) else "")


def _terms_pattern(terms: Sequence[str]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # Longest first, so "视频号" wins over "视频" where both match at one place.
    alternatives = sorted((re.escape(term) for term in terms), key=len, reverse=True)
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _word_edges(
    flat: str, start: int, end: int, first: re.Match[str] | None, reach: int = 12
) -> tuple[int, int]:
    """Move cut edges that fall inside a word of spaced text to the nearby space (within
    `reach` characters), never past the first match. Text without spaces is cut as it is."""
    if start > 0 and not flat[start - 1].isspace():
        space = flat.find(" ", start, start + reach)
        if space != -1 and (first is None or space < first.start()):
            start = space + 1
    if end < len(flat) and not flat[end].isspace():
        space = flat.rfind(" ", max(start, end - reach), end)
        if space != -1 and (first is None or space >= first.end()):
            end = space
    return start, end

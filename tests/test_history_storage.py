"""storage.history against real databases: a SQLite file in a temporary directory, and
PostgreSQL when TEST_DATABASE_URL names a server (each test on a fresh database of its own:
tests/databases.py).

Every test is about one user's rows: pages, numbers, search, deleting. Each one also keeps a
second user with the same numbers and texts, who must never show up and never lose anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from tortoise import Tortoise
from tortoise.migrations.api import migrate

from storage import Task, TaskState, open_database, repository
from storage.db import tortoise_config
from storage.history import (
    MARK_CLOSE,
    MARK_OPEN,
    count_tasks,
    delete_task,
    forget_user,
    make_snippet,
    search_texts,
    task_by_number,
    tasks_page,
)
from storage.models import InboxUpdate, TaskRun, User
from storage.repository import ApplyResult, Outcome

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

ANN, BOB = 11, 22
_run_ids = iter(range(1, 1_000_000))


@pytest_asyncio.fixture
async def db(open_db: str) -> AsyncIterator[str]:
    """The test's database open (migrated), empty, with users Ann and Bob; yields its dialect."""
    await repository.upsert_user(ANN, "Ann", "ann")
    await repository.upsert_user(BOB, "Bob", "bob")
    yield open_db


# --- making tasks ---------------------------------------------------------------------------


async def add_tasks(user_id: int, count: int) -> list[Task]:
    """`count` pending tasks of one message, numbered by the repository as in the bot."""
    if count == 0:
        return []
    links = [(f"https://b23.tv/{user_id}-{i}", f"run-{next(_run_ids)}") for i in range(count)]
    return await repository.create_tasks(
        user_id=user_id, chat_id=user_id, request_message_id=next(_run_ids), links=links
    )


async def add_text(
    user_id: int, text: str | None, *, state: TaskState = TaskState.COMPLETED
) -> Task:
    """One task settled as the callback would: completed with `text`, failed, or left pending."""
    (task,) = await add_tasks(user_id, 1)
    if state is TaskState.COMPLETED:
        outcome = Outcome(succeeded=True, text=text or "")
    elif state is TaskState.FAILED:
        outcome = Outcome(succeeded=False, error_kind="coze_error", error_detail="no")
    else:
        return task
    applied = await repository.apply_outcome(task.run_id, outcome, via_callback=True)
    assert applied is ApplyResult.APPLIED
    return await Task.get(id=task.id)


async def numbers_found(user_id: int, words: str) -> list[int]:
    return [hit.task.user_number or 0 for hit in await search_texts(user_id, words)]


# --- pages ----------------------------------------------------------------------------------


async def walk_older(user_id: int) -> list[list[int | None]]:
    pages, page = [], await tasks_page(user_id)
    while True:
        pages.append([task.user_number for task in page.tasks])
        assert page.total == await count_tasks(user_id)
        assert page.last_position - page.first_position + 1 == len(page.tasks) or not page.tasks
        assert page.newer + len(page.tasks) + page.older == page.total
        if page.older_cursor is None:
            assert not page.has_older
            return pages
        page = await tasks_page(user_id, before=page.older_cursor)


@pytest.mark.parametrize("count", [0, 1, 10, 11, 25])
async def test_pages_of_ten_newest_first_at_the_boundaries(db: str, count: int) -> None:
    await add_tasks(BOB, 12)  # Bob's tasks share every number with Ann's first ones
    await add_tasks(ANN, count)
    numbers = list(range(count, 0, -1))
    expected = [numbers[i : i + 10] for i in range(0, len(numbers), 10)] or [[]]

    assert await walk_older(ANN) == expected
    first = await tasks_page(ANN)
    assert not first.has_newer and first.newer_cursor is None
    assert first.has_older == (count > 10) and first.total == count
    assert (first.first_position, first.last_position) == ((1, min(count, 10)) if count else (0, 0))

    # Back with Newer from the oldest page: the same pages, ending on the first one.
    page = first
    while page.older_cursor is not None:
        page = await tasks_page(ANN, before=page.older_cursor)
    back = [[task.user_number for task in page.tasks]]
    while page.newer_cursor is not None:
        page = await tasks_page(ANN, after=page.newer_cursor)
        back.append([task.user_number for task in page.tasks])
    assert back == expected[::-1]
    assert all(task.user_id == BOB for task in (await tasks_page(BOB, size=50)).tasks)


async def test_cursors_stay_right_while_tasks_come_and_go(db: str) -> None:
    await add_tasks(ANN, 25)
    first = await tasks_page(ANN)
    assert [t.user_number for t in first.tasks] == list(range(25, 15, -1))

    await delete_task_finished(ANN, 15)  # the first task of the next page goes
    await add_tasks(ANN, 3)  # and new ones come: #26-#28
    second = await tasks_page(ANN, before=first.older_cursor)
    assert [t.user_number for t in second.tasks] == [14, 13, 12, 11, 10, 9, 8, 7, 6, 5]
    assert (second.newer, second.older, second.total) == (13, 4, 27)
    assert (second.first_position, second.last_position) == (14, 23)

    # Newer: the ten just newer (#15 is gone), then the newest page, full, and not #26-#28 alone.
    newer = await tasks_page(ANN, after=second.newer_cursor)
    assert [t.user_number for t in newer.tasks] == list(range(25, 15, -1))
    assert newer.has_newer and newer.newer == 3
    newest = await tasks_page(ANN, after=newer.newer_cursor)
    assert [t.user_number for t in newest.tasks] == list(range(28, 18, -1))
    assert not newest.has_newer and newest.first_position == 1

    # A cursor past either end, or on tasks all gone, gives the newest page; nothing raises.
    for cursor in ({"before": 1}, {"before": -3}, {"after": 28}, {"after": 2**40}):
        assert [t.user_number for t in (await tasks_page(ANN, **cursor)).tasks] == list(
            range(28, 18, -1)
        )
    assert (await tasks_page(ANN, before=2**40)).tasks[0].user_number == 28
    assert [t.user_number for t in (await tasks_page(ANN, after=-7, size=3)).tasks] == [3, 2, 1]
    with pytest.raises(ValueError):
        await tasks_page(ANN, before=5, after=2)
    with pytest.raises(ValueError):
        await tasks_page(ANN, size=0)


async def delete_task_finished(user_id: int, number: int) -> None:
    await Task.filter(user_id=user_id, user_number=number).update(state=TaskState.FAILED)
    assert await delete_task(user_id, number)


async def test_a_task_by_its_number_is_only_its_users(db: str) -> None:
    await add_text(ANN, "Ann's first text")
    bob_1 = await add_text(BOB, "Bob's first text")
    await add_text(BOB, "Bob's second text")

    ann_1 = await task_by_number(ANN, 1)
    assert ann_1 is not None and ann_1.result_text == "Ann's first text"
    assert await task_by_number(ANN, 2) is None  # Bob has a #2, Ann has not
    found = await task_by_number(BOB, 1)
    assert found is not None and found.id == bob_1.id
    for number in (0, -1, 2**31, 2**63):
        assert await task_by_number(ANN, number) is None
        assert not await delete_task(ANN, number)
    assert (await count_tasks(ANN), await count_tasks(BOB), await count_tasks(999)) == (1, 2, 0)


# --- search ---------------------------------------------------------------------------------


ENGLISH = "Today we learn how to make bread at home. Knead the dough for ten minutes, then rest."
CHINESE = "今天我们来看一个视频，教你在家做面包。揉面十分钟，然后让面团醒一会儿。"


async def test_search_finds_words_in_english_and_chinese(db: str) -> None:
    await add_text(ANN, ENGLISH)  # 1
    await add_text(ANN, CHINESE)  # 2
    await add_text(ANN, "Nothing about baking here; 这是另一个视频的字幕。")  # 3
    await add_text(ANN, None, state=TaskState.FAILED)  # 4: no text
    await add_text(ANN, None, state=TaskState.PENDING)  # 5: no text yet
    for text in (ENGLISH, CHINESE):  # Bob has the same texts
        await add_text(BOB, text)

    assert await numbers_found(ANN, "bread") == [1]
    assert await numbers_found(ANN, "BREAD dough") == [1]  # case ignored, every word needed
    assert await numbers_found(ANN, "bread cake") == []
    assert await numbers_found(ANN, "ough") == [1]  # a part of a word
    assert await numbers_found(ANN, "做面包") == [2]  # Chinese has no spaces: substrings
    assert await numbers_found(ANN, "视频") == [3, 2]  # newest first
    assert await numbers_found(ANN, "视频 面包") == [2]  # both needed
    assert await numbers_found(ANN, "面包 bread") == []
    assert await numbers_found(ANN, "的") == [3]  # one character
    assert await numbers_found(ANN, "baking 视频") == [3]
    assert await numbers_found(ANN, "  \n ") == []
    assert await numbers_found(BOB, "视频") == [2]  # Bob's own #2, never Ann's tasks
    assert [hit.task.user_id for hit in await search_texts(BOB, "bread")] == [BOB]
    assert await numbers_found(999, "bread") == []

    (hit,) = await search_texts(ANN, "dough bread")
    assert hit.task.state == TaskState.COMPLETED and hit.task.user_number == 1
    assert f"{MARK_OPEN}bread{MARK_CLOSE}" in hit.snippet
    assert f"{MARK_OPEN}dough{MARK_CLOSE}" in hit.snippet
    (hit,) = await search_texts(ANN, "面包 揉面")
    assert f"{MARK_OPEN}面包{MARK_CLOSE}" in hit.snippet and "<" not in hit.snippet

    for i in range(12):
        await add_text(ANN, f"bread number {i}")
    hits = await search_texts(ANN, "bread")
    assert [hit.task.user_number for hit in hits] == list(range(17, 7, -1))  # ten, newest first
    assert len(await search_texts(ANN, "bread", limit=50)) == 13
    assert await search_texts(ANN, "bread", limit=0) == []

    # Case beyond ASCII: ignored by PostgreSQL, not by SQLite's LIKE (documented).
    russian = await add_text(ANN, "Привет, мир")
    found = await numbers_found(ANN, "ПРИВЕТ")
    assert found == ([russian.user_number] if db == "postgres" else [])
    assert await numbers_found(ANN, "Привет") == [russian.user_number]


HOSTILE_TEXT = 'He said "100% sure" (really) -- NEAR(x, y) a-b c:d *star* file_name 50_50 it\'s'
HOSTILE = [
    '"',
    '""',
    '"sure',
    "*",
    "star*",
    "NEAR(",
    "NEAR(x",
    "NEAR(x, y)",
    "-",
    "-b",
    "a-b",
    "c:d",
    ":",
    "(",
    ")",
    "(really)",
    "%",
    "100%",
    "_",
    "e_n",
    "!",
    "!%",
    "\\",
    "'",
    "it's",
    "'; DROP TABLE tasks; --",
    "OR 1=1",
    "bread OR x",
    "AND",
    "NOT",
    "^",
    "{a b}",
    "x\x00y",
    "\ud800",
    "视频\ud800",
    "a" * 2000,
]


async def test_hostile_words_never_raise_and_match_only_literally(db: str) -> None:
    await add_text(ANN, HOSTILE_TEXT)  # 1
    await add_text(ANN, ENGLISH)  # 2
    await add_text(ANN, "100 percent, a b, NEAR x y, star, file name, it is")  # 3
    await add_text(BOB, HOSTILE_TEXT)
    texts = {
        number: (await Task.get(user_id=ANN, user_number=number)).result_text or ""
        for number in (1, 2, 3)
    }

    for words in HOSTILE:
        found = await numbers_found(ANN, words)
        terms = words.split()
        clean = bool(terms) and len(words) <= 1000 and "\x00" not in words
        clean = clean and "\ud800" not in words
        expected = sorted(
            (
                number
                for number, text in texts.items()
                if clean and all(term.casefold() in text.casefold() for term in terms)
            ),
            reverse=True,
        )
        assert found == expected, words

    assert await numbers_found(ANN, "%") == [1]  # not every text
    assert await numbers_found(ANN, "_") == [1]
    # Quotes are characters, not syntax: '"100%' and 'sure"' are both in text #1.
    assert await numbers_found(ANN, '"100% sure"') == [1]
    assert await numbers_found(ANN, '"sure 100%"') == []
    assert await count_tasks(ANN) == 3 and await Task.all().count() == 4  # nothing dropped


async def test_a_retried_text_replaces_the_old_one_in_search(db: str) -> None:
    task = await add_text(ANN, "the old banana text 旧的字幕")
    await add_text(BOB, "banana for Bob")
    assert await numbers_found(ANN, "banana") == [1]

    decision = await repository.begin_retry(
        task_id=task.id,
        user_id=ANN,
        new_run_id="run-retry",
        max_retries=3,
        expires_at=task.created_at,
    )
    assert decision.refusal is None
    assert await numbers_found(ANN, "banana") == []  # no text while it runs again
    await repository.apply_outcome(
        "run-retry", Outcome(succeeded=True, text="the new cherry text 新的字幕"), via_callback=True
    )
    assert await numbers_found(ANN, "cherry") == [1]
    assert await numbers_found(ANN, "新的") == [1]
    assert await numbers_found(ANN, "banana") == []
    assert await numbers_found(ANN, "旧的") == []
    assert await numbers_found(ANN, "字幕 text") == [1]
    assert await numbers_found(BOB, "banana") == [1]
    # Text put there by hand (an operator's fix) is what is searched, too.
    await Task.filter(id=task.id).update(result_text="a corrected plum text")
    assert await numbers_found(ANN, "plum") == [1]
    assert await numbers_found(ANN, "cherry") == []


# --- deleting -------------------------------------------------------------------------------


async def test_delete_removes_one_task_its_runs_and_hits_only(db: str) -> None:
    ann_1 = await add_text(ANN, "apple pie recipe 苹果派")
    await add_text(ANN, "apple juice 苹果汁")
    running = await add_text(ANN, None, state=TaskState.PENDING)
    await add_text(BOB, "apple pie recipe 苹果派")

    assert await numbers_found(ANN, "apple") == [2, 1]
    assert await delete_task(ANN, 1)
    assert await task_by_number(ANN, 1) is None
    assert await TaskRun.filter(task_id=ann_1.id).count() == 0
    assert await numbers_found(ANN, "apple") == [2]
    assert await numbers_found(ANN, "苹果") == [2]
    assert not await delete_task(ANN, 1)  # gone already
    assert not await delete_task(ANN, 4)  # never was (Bob has no #4 either)
    assert not await delete_task(ANN, running.user_number or 0)  # still running: kept
    assert await task_by_number(ANN, 3) is not None

    # Bob's #1 is untouched by Ann's deleting.
    assert await numbers_found(BOB, "apple pie") == [1]
    assert await numbers_found(BOB, "苹果") == [1]
    assert await count_tasks(BOB) == 1 and await TaskRun.filter(task__user_id=BOB).count() == 1

    # Numbers are not reused: the next task is #4.
    (new,) = await add_tasks(ANN, 1)
    assert new.user_number == 4


async def test_forget_deletes_the_users_finished_tasks_and_nothing_else(db: str) -> None:
    for i in range(3):
        await add_text(ANN, f"soup recipe {i} 汤的做法")
    await add_text(ANN, None, state=TaskState.FAILED)
    await add_text(ANN, None, state=TaskState.PENDING)  # #5, still to run
    for i in range(2):
        await add_text(BOB, f"soup recipe {i} 汤的做法")
    await repository.store_updates([(501, '{"update_id": 501}')])
    before = await User.get(id=ANN)
    assert before.extract_count == 3

    assert await forget_user(ANN) == 4
    assert [t.user_number for t in (await tasks_page(ANN)).tasks] == [5]  # the running one
    assert await numbers_found(ANN, "soup") == []
    assert await numbers_found(ANN, "汤") == []
    assert await TaskRun.filter(task__user_id=ANN).count() == 1
    after = await User.get(id=ANN)
    assert (after.extract_count, after.last_extract_at) == (0, None)
    assert after.last_task_number == 5 and after.first_name == "Ann"
    assert await InboxUpdate.filter(update_id=501).exists()

    assert await numbers_found(BOB, "soup") == [2, 1]
    assert await numbers_found(BOB, "汤") == [2, 1]
    assert (await User.get(id=BOB)).extract_count == 2
    assert await TaskRun.filter(task__user_id=BOB).count() == 2
    assert await forget_user(ANN) == 0 and await forget_user(999) == 0


# --- snippets, and the migration on a database with rows ---------------------------------------


async def test_snippet_is_short_marked_plain_text() -> None:
    text = "word " * 40 + "the needle is here " + "more " * 40
    snippet = make_snippet(text, ["needle", "here"])
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "«needle»" in snippet and "«here»" in snippet
    assert 60 <= len(snippet) <= 100
    assert make_snippet("short\n\ntext", ["TEXT"]) == "short «text»"
    assert (
        make_snippet("无空格的中文" * 30 + "目标词" + "后文" * 40, ["目标词"]).count("«目标词»")
        == 1
    )
    assert make_snippet("", ["x"]) == ""
    assert make_snippet("abc", []) == "abc"


async def test_texts_stored_before_the_upgrade_are_found(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/old.sqlite3"
    await migrate(config=tortoise_config(url), target="models.0004_people_numbers_videos")
    await Tortoise.close_connections()
    with sqlite3.connect(tmp_path / "old.sqlite3") as old:
        old.execute(
            "INSERT INTO users (id, first_name, extract_count, created_at, updated_at)"
            " VALUES (7, 'Ann', 1, '2026-01-01', '2026-01-01')"
        )
        for number, (state, text) in enumerate(
            [("completed", "an old text about rivers 河流"), ("failed", None), ("pending", None)],
            start=1,
        ):
            old.execute(
                "INSERT INTO tasks (user_id, user_number, chat_id, request_message_id, input_url,"
                " run_id, state, result_text, progress, retry_count, callback_received, counted,"
                " notification_sent, undeliverable, delivery_attempts, created_at, updated_at)"
                " VALUES (7, ?, 7, 1, 'https://b23.tv/x', ?, ?, ?, 0, 0, 0, 0, 0, 0, 0,"
                " '2026-01-01', '2026-01-01')",
                (number, f"run-old-{number}", state, text),
            )

    async with open_database(url):
        assert await numbers_found(7, "rivers") == [1]
        assert await numbers_found(7, "河流") == [1]
        # The pending task gets its text later, and is found with the old one.
        await Task.filter(user_number=3).update(state="completed", result_text="rivers again")
        assert await numbers_found(7, "rivers") == [3, 1]

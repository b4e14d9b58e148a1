"""A user's history commands through the real bot: /tasks, /get, /find, /delete, /forget, the
"As a file" button and /settings. Two users (Ann and Bob), each with several finished tasks of
known texts: every command does what it says to its user's own tasks, and never shows, finds
or deletes the other user's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.config import Settings
from bot.runtime import RunningBot, running_bot
from simulators.coze import FakeCoze, WorkflowOutcome
from simulators.telegram import FakeTelegram, SentMessage
from storage import Task, TaskState
from tests.conftest import (
    OTHER_USER,
    USER,
    Conversation,
    delivered,
    eventually,
    make_settings,
    settled,
    text_buttons,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

ANN, BOB = USER, OTHER_USER
GROUP = -4001234567
NOT_YOURS = "This button is not for you, or the task no longer exists."
NO_TASKS = "You have no tasks yet. Send me a video link to start one."


def ann_link(n: int) -> str:
    return f"https://v.douyin.com/ann{n:02d}/"


def bob_link(n: int) -> str:
    return f"https://v.douyin.com/bob{n:02d}/"


ANN_TEXTS = {
    1: "Morning walk by the river. 今天的视频讲猫咪和小狗。",
    2: "A recipe for apple pie, step by step.",
    3: "The zebra at the zoo was sleeping all afternoon.",
    4: "Grandmother's secret: tomatoes need sun. 番茄需要阳光。",
    5: "An apple and banana smoothie with honey.",
    6: "He was 100% sure the snake_case name was right.",
    7: "Another zebra, this time crossing the road.",
    8: 'She said "quoted words" and it\'s fine.',
    9: "Backslash test: C:\\temp\\files stays.",
    10: "Mountain hiking, day ten.",
    11: "Eleventh: learning to juggle three balls.",
    12: "Twelfth and newest: a concert in the park.",
}
ANN_TEXTS = {n: f"{text} Ann's diary." for n, text in ANN_TEXTS.items()}
LONG_TEXT = "\n\n".join(
    f"Paragraph {i}: bobsworth reads a long story about the sea, line {i}." for i in range(330)
)
assert len(LONG_TEXT) > 20_000
BOB_TEXTS = {
    1: "Bob's zebra crossing, filmed by bobsworth. 视频里有猫咪。 A diary too.",
    2: "bobsworth tries apple banana bread.",
    3: LONG_TEXT,
}
TEXTS = {ann_link(n): text for n, text in ANN_TEXTS.items()} | {
    bob_link(n): text for n, text in BOB_TEXTS.items()
}


def outcome(url: str) -> WorkflowOutcome:
    return WorkflowOutcome(text=TEXTS.get(url, f"words of {url}"))


class Chat(Conversation):
    """A private chat, with a way to ask one thing and get the one answer."""

    async def ask(self, text: str) -> SentMessage:
        before = len(self.messages)
        self.send(text)
        return (await self.wait_for_messages(before + 1))[before]

    async def ask_text(self, text: str) -> str:
        return (await self.ask(text)).text or ""

    async def press_for(self, message: SentMessage, data: str) -> dict[str, Any]:
        return await self.answer_to(self.press(message, data))


class Group:
    """A group with the bot, Ann and Bob in it."""

    def __init__(self, telegram: FakeTelegram) -> None:
        self.telegram = telegram
        self.bot = telegram.bot_username

    @property
    def messages(self) -> list[SentMessage]:
        return self.telegram.messages(GROUP)

    def send(self, user_id: int, text: str) -> dict[str, Any]:
        name = "Ann" if user_id == ANN else "Bob"
        return self.telegram.user_sends_in_group(GROUP, user_id, text, first_name=name)

    async def ask(self, user_id: int, text: str) -> SentMessage:
        before = len(self.messages)
        sent = self.send(user_id, text)
        await self.telegram.wait_for(lambda: len(self.messages) > before)
        answer = self.messages[before]
        assert answer.reply_to_message_id == sent["message_id"]  # answers quote in groups
        return answer

    async def press(self, user_id: int, message: SentMessage, data: str) -> dict[str, Any]:
        query = self.telegram.user_presses(user_id, message, data)
        await self.telegram.wait_for(lambda: query in self.telegram.callback_answers)
        return self.telegram.callback_answers[query]


async def wait_for_edit(telegram: FakeTelegram, message: SentMessage, edits: int = 1) -> None:
    await telegram.wait_for(lambda: message.edits >= edits)


def listed(page: str) -> list[tuple[int, str]]:
    """(number, link) of each task line of a /tasks page, in order."""
    return [(int(n), url) for n, url in re.findall(r"^#(\d+) \w[\w ]* - (\S+)$", page, re.M)]


def found_numbers(answer: str) -> list[int]:
    return [int(n) for n in re.findall(r"^#(\d+): ", answer, re.M)]


async def delivered_number(user_id: int, number: int) -> None:
    async def check() -> bool:
        return await Task.filter(
            user_id=user_id, user_number=number, notification_sent=True
        ).exists()

    await eventually(check, what=f"#{number} of {user_id} delivered")


async def numbers_of(user_id: int) -> list[int]:
    tasks = await Task.filter(user_id=user_id).order_by("user_number")
    return [task.user_number or 0 for task in tasks]


#: Sends paced far above Telegram's 20-30 a second: these tests are about what is sent, not
#: when, and the fixture's 20 sends would otherwise take a second each time.
FAST = {"max_messages_per_second": 1000.0}


@pytest.fixture
def settings(database_url: str, telegram: FakeTelegram, coze: FakeCoze) -> Settings:
    return make_settings(database_url, telegram, coze, delivery=FAST)


@pytest.fixture
def ann(telegram: FakeTelegram) -> Chat:
    return Chat(telegram, ANN)


@pytest.fixture
def bob(telegram: FakeTelegram) -> Chat:
    return Chat(telegram, BOB)


@pytest.fixture
def group(telegram: FakeTelegram) -> Group:
    return Group(telegram)


@pytest_asyncio.fixture
async def histories(bot: RunningBot, coze: FakeCoze, ann: Chat, bob: Chat) -> AsyncIterator[None]:
    """Ann's 12 finished tasks and Bob's 3 (his #3 a long text, delivered as a document)."""
    coze.outcome_for = outcome
    # Three links a message (the most one message may hold), numbered in the order sent.
    for first in range(1, 13, 3):
        ann.send(" ".join(ann_link(n) for n in range(first, first + 3)), first_name="Ann")
    bob.send(" ".join(bob_link(n) for n in BOB_TEXTS), first_name="Bob")

    async def all_delivered() -> bool:
        return await Task.filter(notification_sent=True).count() == 15

    await eventually(all_delivered, what="15 texts delivered")
    for user, link, texts in ((ANN, ann_link, ANN_TEXTS), (BOB, bob_link, BOB_TEXTS)):
        for n, text in texts.items():
            task = await Task.get(user_id=user, user_number=n)
            assert (task.input_url, task.state, task.result_text) == (
                link(n),
                TaskState.COMPLETED,
                text,
            )
    yield


# --- /tasks ---------------------------------------------------------------------------------


async def test_tasks_pages_newest_first_with_older_and_newer(
    histories: None, ann: Chat, bob: Chat, telegram: FakeTelegram
) -> None:
    first = await ann.ask("/tasks")

    assert first.text is not None
    assert first.text.startswith("Your tasks (1-10 of 12, newest first):\n")
    assert listed(first.text) == [(n, ann_link(n)) for n in range(12, 2, -1)]
    assert "#12 done - " in first.text
    assert "Texts extracted: 12 (last: " in first.text
    assert first.buttons() == [("« Older", "p:o:3")]

    assert "text" not in await ann.press_for(first, "p:o:3")
    await wait_for_edit(telegram, first)
    assert first.text is not None
    assert first.text.startswith("Your tasks (11-12 of 12, newest first):\n")
    assert listed(first.text) == [(2, ann_link(2)), (1, ann_link(1))]
    assert first.buttons() == [("Newer »", "p:n:2")]

    await ann.press_for(first, "p:n:2")
    await wait_for_edit(telegram, first, 2)
    assert first.text is not None and first.text.startswith("Your tasks (1-10 of 12,")
    assert listed(first.text) == [(n, ann_link(n)) for n in range(12, 2, -1)]
    assert first.buttons() == [("« Older", "p:o:3")]

    mine = await bob.ask("/tasks")
    assert mine.text is not None
    assert mine.text.startswith("Your tasks (1-3 of 3, newest first):\n")
    assert listed(mine.text) == [(3, bob_link(3)), (2, bob_link(2)), (1, bob_link(1))]
    assert mine.buttons() == []  # one page: no Older, no Newer
    assert "/ann" not in mine.text
    for page in (first.text, *(m.text or "" for m in ann.messages)):
        assert "/bob" not in page  # Bob's tasks never on Ann's pages


async def test_in_a_group_a_page_button_shows_the_presser_their_own_tasks(
    histories: None, group: Group, telegram: FakeTelegram
) -> None:
    group.send(BOB, "hello everyone")  # Bob is a member; the bot ignores chatter
    page = await group.ask(ANN, f"/tasks@{group.bot}")
    assert page.text is not None and listed(page.text)[0] == (12, ann_link(12))
    assert page.buttons() == [("« Older", "p:o:3")]

    await group.press(BOB, page, "p:o:3")
    await wait_for_edit(telegram, page)

    # Bob sees his own tasks older than his #3, never Ann's.
    assert page.text is not None
    assert page.text.startswith("Your tasks (2-3 of 3, newest first):\n")
    assert listed(page.text) == [(2, bob_link(2)), (1, bob_link(1))]
    assert "/ann" not in page.text
    assert page.buttons() == [("Newer »", "p:n:2")]

    await group.press(ANN, page, "p:n:2")
    await wait_for_edit(telegram, page, 2)
    assert page.text is not None and "/bob" not in page.text
    assert listed(page.text) == [(n, ann_link(n)) for n in range(12, 2, -1)]
    assert await numbers_of(ANN) == list(range(1, 13))
    assert await numbers_of(BOB) == [1, 2, 3]


# --- /get -----------------------------------------------------------------------------------


async def test_get_sends_the_users_own_text_again(histories: None, ann: Chat, bob: Chat) -> None:
    assert await ann.ask_text("/get 3") == f"Task #3 - text of {ann_link(3)}\n\n{ANN_TEXTS[3]}"
    assert await ann.ask_text("/get #1") == f"Task #1 - text of {ann_link(1)}\n\n{ANN_TEXTS[1]}"
    # Bob's #1 is his own first text, not Ann's.
    assert await bob.ask_text("/get 1") == f"Task #1 - text of {bob_link(1)}\n\n{BOB_TEXTS[1]}"
    answer = await ann.ask("/get 12")
    assert answer.buttons() == [] and answer.document is None
    assert answer.text == f"Task #12 - text of {ann_link(12)}\n\n{ANN_TEXTS[12]}"
    # Ann's #12 is hers alone.
    assert await bob.ask_text("/get 12") == "You have no task #12. /tasks lists yours."
    assert await bob.ask_text("/get 4") == "You have no task #4. /tasks lists yours."


async def test_get_of_a_long_text_sends_a_document_with_the_whole_text(
    histories: None, bob: Chat, telegram: FakeTelegram
) -> None:
    actions_before = telegram.chat_actions(BOB).count("upload_document")
    before = len(bob.messages)

    document = await bob.ask("/get 3")

    assert document.document is not None
    assert document.document.decode("utf-8") == LONG_TEXT
    assert document.filename == "task-3.txt"
    assert document.text == "Task #3"
    assert telegram.chat_actions(BOB).count("upload_document") == actions_before + 1
    await settled()
    assert len(bob.messages) == before + 1  # the document alone, no pieces of text


GET_USAGE = "Send /get followed by a task number, for example: /get 3"


async def test_get_without_a_task_of_the_user_says_how_or_that_there_is_none(
    bot: RunningBot, coze: FakeCoze, bob: Chat
) -> None:
    coze.outcome_for = outcome
    bob.send(f"{bob_link(1)} {bob_link(2)}")
    await delivered(2)
    asked = {
        "/get": GET_USAGE,
        "/get abc": GET_USAGE,
        "/get ²": GET_USAGE,  # a digit to str.isdigit, not to int()
        "/get 1 2": GET_USAGE,
        "/get -1": GET_USAGE,
        "/get 1.5": GET_USAGE,
        "/get 1234567890123": GET_USAGE,
        "/get 0": "You have no task #0. /tasks lists yours.",
        "/get 3": "You have no task #3. /tasks lists yours.",
        "/get 99999999999": "You have no task #99999999999. /tasks lists yours.",
    }

    answers = {command: await bob.ask_text(command) for command in asked}

    assert answers == asked
    await settled()
    assert not any(m.document is not None for m in bob.messages)
    assert len(bob.messages) == 3 + len(asked)  # the ack, two texts, one answer each
    assert await bob.ask_text("/get 2") == f"Task #2 - text of {bob_link(2)}\n\n{BOB_TEXTS[2]}"


# --- /find ----------------------------------------------------------------------------------


async def test_find_lists_the_users_matching_texts_with_snippets(
    histories: None, ann: Chat, bob: Chat
) -> None:
    zebra = await ann.ask_text("/find zebra")
    lines = zebra.splitlines()
    assert lines[0] == "2 texts contain “zebra”:"
    assert found_numbers(zebra) == [7, 3]
    assert "«zebra»" in lines[1] and "crossing the road" in lines[1]
    assert "«zebra»" in lines[2] and "sleeping" in lines[2]
    assert lines[-1] == "/get N sends a whole text."
    assert "bobsworth" not in zebra  # Bob's zebra is his

    assert found_numbers(await ann.ask_text("/find ZeBrA")) == [7, 3]  # case ignored

    cat = await ann.ask_text("/find 猫咪")
    assert cat.startswith("1 text contains “猫咪”:\n")
    assert found_numbers(cat) == [1] and "«猫咪»" in cat and "视频里" not in cat

    both = await ann.ask_text("/find apple banana")
    assert found_numbers(both) == [5]  # #2 has "apple" only
    assert "«apple»" in both and "«banana»" in both

    assert found_numbers(await ann.ask_text("/find 番茄 tomatoes")) == [4]

    mine = await bob.ask_text("/find zebra")
    assert mine.startswith("1 text contains “zebra”:\n")
    assert found_numbers(mine) == [1] and "bobsworth" in mine
    assert found_numbers(await bob.ask_text("/find apple banana")) == [2]
    long_hit = await bob.ask_text("/find line 329.")
    assert found_numbers(long_hit) == [3]

    # No match, or nothing to look for.
    assert await ann.ask_text("/find bobsworth") == "None of your texts contains “bobsworth”."
    assert await ann.ask_text("/find zebra banana") == (
        "None of your texts contains “zebra banana”."
    )
    assert await bob.ask_text("/find tomatoes") == "None of your texts contains “tomatoes”."
    usage = "Send /find followed by words to look for, for example: /find 视频"
    assert await ann.ask_text("/find") == usage
    assert await ann.ask_text("/find    ") == usage
    assert found_numbers(await ann.ask_text("/find zebra")) == [7, 3]


HOSTILE_WORDS = {
    "%": [6],
    "100%": [6],
    "_": [6],
    "snake_case": [6],
    "1_0": [],  # "_" is no wildcard: "100" does not match
    "%zebra%": [],
    "z%a": [],
    '"quoted': [8],
    "it's": [8],
    "Grandmother's": [4],
    "\\": [9],
    "C:\\temp": [9],
    "\\%": [],
    "'; DROP TABLE tasks; --": [],
    "' OR '1'='1": [],
    "zebra') OR 1=1 --": [],
    "*": [],
    "<b>zebra</b>": [],
}


async def test_hostile_words_are_plain_text(histories: None, ann: Chat, bob: Chat) -> None:
    for words, numbers in HOSTILE_WORDS.items():
        answer = await ann.ask_text(f"/find {words}")
        assert found_numbers(answer) == numbers, words
        if numbers:
            assert answer.splitlines()[0].endswith(f"“{words}”:"), words
        else:
            assert answer == f"None of your texts contains “{words}”.", words
        assert "bobsworth" not in answer
    assert await ann.ask_text("/get '; DROP TABLE tasks; --") == GET_USAGE
    assert await ann.ask_text("/delete 1; DROP TABLE tasks") == (
        "Send /delete followed by a task number, for example: /delete 3"
    )
    assert await ann.ask_text("/delete 1 OR 1=1") == (
        "Send /delete followed by a task number, for example: /delete 3"
    )

    # Nothing was broken, and every task is still there.
    await settled()
    assert found_numbers(await ann.ask_text("/find zebra")) == [7, 3]
    assert found_numbers(await bob.ask_text("/find zebra")) == [1]
    assert await numbers_of(ANN) == list(range(1, 13))
    assert await numbers_of(BOB) == [1, 2, 3]
    assert not any(m.buttons() for m in ann.messages[-len(HOSTILE_WORDS) - 4 :])


async def test_find_with_more_than_ten_matches_does_not_miscount(
    histories: None, ann: Chat
) -> None:
    answer = await ann.ask_text("/find diary")
    assert len(found_numbers(answer)) == 10  # the newest ten are shown
    assert found_numbers(answer) == list(range(12, 2, -1))
    # All twelve of Ann's texts contain "diary": the answer must not say ten do.
    assert not answer.startswith("10 texts contain")


async def test_find_with_a_very_long_query_gets_a_proper_answer(bot: RunningBot, ann: Chat) -> None:
    words = "x" * 4080
    answer = await ann.ask_text(f"/find {words}")
    assert answer != "Sorry, something went wrong on my side. Please try again in a moment."
    assert answer.startswith("None of your texts contains")


# --- /delete --------------------------------------------------------------------------------


async def test_delete_asks_cancel_keeps_delete_removes_only_that_task(
    histories: None, ann: Chat, bob: Chat, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    # Bob asks for Ann's video #4: answered from her text, as his own task #4.
    bob.send(ann_link(4))
    await delivered_number(BOB, 4)
    runs = len(coze.runs)
    ann_result_4 = next(m for m in ann.messages if (m.text or "").startswith("Task #4 - text"))
    assert ann_result_4.buttons() == text_buttons(4, ANN)

    assert await ann.ask_text("/delete") == (
        "Send /delete followed by a task number, for example: /delete 3"
    )
    assert await ann.ask_text("/delete 13") == "You have no task #13. /tasks lists yours."
    assert await bob.ask_text("/delete 12") == "You have no task #12. /tasks lists yours."

    confirm = await ann.ask("/delete 4")
    assert confirm.text == "Delete task #4 and its text? This cannot be undone."
    assert confirm.buttons() == [("Delete", f"del:{ANN}:4"), ("Cancel", f"x:{ANN}")]

    await ann.press_for(confirm, f"x:{ANN}")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Nothing was deleted." and confirm.buttons() == []
    await settled()
    assert await numbers_of(ANN) == list(range(1, 13))
    assert (await ann.ask_text("/get 4")).endswith(ANN_TEXTS[4])

    confirm = await ann.ask("/delete 4")
    await ann.press_for(confirm, f"del:{ANN}:4")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Task #4 is deleted." and confirm.buttons() == []

    assert await numbers_of(ANN) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert await ann.ask_text("/get 4") == "You have no task #4. /tasks lists yours."
    page = await ann.ask_text("/tasks")
    assert page.startswith("Your tasks (1-10 of 11, newest first):\n")
    assert 4 not in [n for n, _ in listed(page)] and ann_link(4) not in page
    assert await ann.ask_text("/find tomatoes") == "None of your texts contains “tomatoes”."
    # The old text's buttons no longer reach the task.
    assert (await ann.press_for(ann_result_4, f"f:{ANN}:4"))["text"] == NOT_YOURS
    assert (await ann.press_for(ann_result_4, f"r:{ANN}:4"))["text"] == NOT_YOURS

    # Bob's tasks are untouched, his copy of the same video's text included.
    assert await numbers_of(BOB) == [1, 2, 3, 4]
    assert (await bob.ask_text("/get 4")).endswith(ANN_TEXTS[4])
    assert found_numbers(await bob.ask_text("/find tomatoes")) == [4]
    await settled()
    assert len(coze.runs) == runs  # deleting starts nothing
    assert not any(m.document is not None for m in ann.messages)


async def test_deleting_the_newest_task_never_frees_its_number(
    histories: None, ann: Chat, telegram: FakeTelegram
) -> None:
    confirm = await ann.ask("/delete 12")
    await ann.press_for(confirm, f"del:{ANN}:12")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Task #12 is deleted."

    ack = await ann.ask("https://v.douyin.com/ann-after-delete/")
    assert ack.text is not None and ack.text.startswith("Got it! Task #13 is on its way.")
    await delivered_number(ANN, 13)
    assert await numbers_of(ANN) == [*range(1, 12), 13]
    assert listed(await ann.ask_text("/tasks"))[:2] == [
        (13, "https://v.douyin.com/ann-after-delete/"),
        (11, ann_link(11)),
    ]


async def test_a_task_still_running_cannot_be_deleted(
    histories: None, ann: Chat, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    slow = "https://v.douyin.com/ann-slow/"
    coze.outcome_for = lambda url: WorkflowOutcome(text="slow words", duration=30.0)
    ack = await ann.ask(slow)
    assert ack.text is not None and "Task #13 " in ack.text
    await coze.wait_for(lambda: any(r.parameters["url"] == slow for r in coze.runs.values()))

    confirm = await ann.ask("/delete 13")
    answer = await ann.press_for(confirm, f"del:{ANN}:13")

    assert answer["text"] == "Task #13 is already running. I'll send the text when it's ready."
    assert answer.get("show_alert") is True
    await settled()
    assert confirm.edits == 0 and confirm.buttons()[0] == ("Delete", f"del:{ANN}:13")
    task = await Task.get(user_id=ANN, user_number=13)
    assert task.state in (TaskState.PENDING, TaskState.PROCESSING)
    assert listed(await ann.ask_text("/tasks"))[0] == (13, slow)
    # A finished one next to it still goes.
    confirm = await ann.ask("/delete 1")
    await ann.press_for(confirm, f"del:{ANN}:1")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Task #1 is deleted."
    assert await numbers_of(ANN) == list(range(2, 14))


async def test_in_a_group_only_the_owner_can_confirm_a_deletion(
    histories: None, group: Group, telegram: FakeTelegram
) -> None:
    group.send(BOB, "hello everyone")
    confirm = await group.ask(ANN, f"/delete@{group.bot} 2")
    assert confirm.text == "Delete task #2 and its text? This cannot be undone."

    assert (await group.press(BOB, confirm, f"del:{ANN}:2"))["text"] == NOT_YOURS
    await settled()
    assert confirm.edits == 0 and confirm.buttons()[0] == ("Delete", f"del:{ANN}:2")
    assert await numbers_of(ANN) == list(range(1, 13))
    assert await numbers_of(BOB) == [1, 2, 3]  # and not his own #2 instead

    forget = await group.ask(ANN, f"/forget@{group.bot}")
    assert forget.text == "Delete all your 12 tasks and their texts? This cannot be undone."
    assert (await group.press(BOB, forget, f"fg:{ANN}"))["text"] == NOT_YOURS
    await settled()
    assert forget.edits == 0
    assert await numbers_of(ANN) == list(range(1, 13))
    assert await numbers_of(BOB) == [1, 2, 3]

    await group.press(ANN, confirm, f"del:{ANN}:2")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Task #2 is deleted."
    assert await numbers_of(ANN) == [1, *range(3, 13)]
    assert await numbers_of(BOB) == [1, 2, 3]


async def test_in_a_group_another_member_cannot_cancel_a_confirmation(
    histories: None, group: Group, telegram: FakeTelegram
) -> None:
    group.send(BOB, "hello everyone")
    confirm = await group.ask(ANN, f"/delete@{group.bot} 2")

    answer = await group.press(BOB, confirm, f"x:{ANN}")

    await settled()
    assert await numbers_of(ANN) == list(range(1, 13))
    assert answer.get("text") == NOT_YOURS
    assert confirm.buttons() == [("Delete", f"del:{ANN}:2"), ("Cancel", f"x:{ANN}")]


# --- /forget --------------------------------------------------------------------------------


async def test_forget_deletes_all_the_users_tasks_and_numbering_goes_on(
    histories: None, ann: Chat, bob: Chat, telegram: FakeTelegram
) -> None:
    confirm = await ann.ask("/forget")
    assert confirm.text == "Delete all your 12 tasks and their texts? This cannot be undone."
    assert confirm.buttons() == [("Delete", f"fg:{ANN}"), ("Cancel", f"x:{ANN}")]
    await ann.press_for(confirm, f"x:{ANN}")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Nothing was deleted."
    await settled()
    assert await numbers_of(ANN) == list(range(1, 13))

    confirm = await ann.ask("/forget")
    await ann.press_for(confirm, f"fg:{ANN}")
    await wait_for_edit(telegram, confirm)
    assert confirm.text == "Done: 12 tasks and their texts are deleted."
    assert confirm.buttons() == []

    assert await numbers_of(ANN) == []
    assert await ann.ask_text("/tasks") == NO_TASKS
    assert await ann.ask_text("/find zebra") == "None of your texts contains “zebra”."
    assert await ann.ask_text("/get 1") == "You have no task #1. /tasks lists yours."
    assert await ann.ask_text("/forget") == NO_TASKS  # nothing left to confirm
    # The buttons under the old texts reach nothing any more.
    old = next(m for m in ann.messages if (m.text or "").startswith("Task #1 - text"))
    documents = len(telegram.calls_of("sendDocument"))
    assert (await ann.press_for(old, f"f:{ANN}:1"))["text"] == NOT_YOURS
    assert (await ann.press_for(old, f"r:{ANN}:1"))["text"] == NOT_YOURS
    await settled()
    assert len(telegram.calls_of("sendDocument")) == documents
    assert await numbers_of(ANN) == []

    # Bob's tasks are all there.
    assert await numbers_of(BOB) == [1, 2, 3]
    assert listed(await bob.ask_text("/tasks")) == [(n, bob_link(n)) for n in (3, 2, 1)]
    assert found_numbers(await bob.ask_text("/find zebra")) == [1]
    assert (await bob.ask_text("/get 1")).endswith(BOB_TEXTS[1])

    # Ann's next task is #13: numbers are never reused.
    ack = await ann.ask("https://v.douyin.com/ann-after-forget/")
    assert ack.text is not None and ack.text.startswith("Got it! Task #13 is on its way.")
    await delivered_number(ANN, 13)
    result = ann.messages[-1]
    assert result.text is not None
    assert result.text.startswith("Task #13 - text of https://v.douyin.com/ann-after-forget/")
    assert result.buttons() == text_buttons(13, ANN)
    page = await ann.ask_text("/tasks")
    assert page.startswith("Your tasks (1-1 of 1, newest first):\n")
    assert listed(page) == [(13, "https://v.douyin.com/ann-after-forget/")]


async def test_forget_with_a_task_running_says_what_it_will_delete(
    histories: None, ann: Chat, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text="slow words", duration=30.0)
    ack = await ann.ask("https://v.douyin.com/ann-slow/")
    assert ack.text is not None and "Task #13 " in ack.text

    confirm = await ann.ask("/forget")
    await ann.press_for(confirm, f"fg:{ANN}")
    await wait_for_edit(telegram, confirm, 1)

    assert await numbers_of(ANN) == [13]  # the running task is kept, as documented
    assert confirm.text == "Done: 12 tasks and their texts are deleted."
    asked = next(m for m in telegram.calls_of("sendMessage") if "Delete all your" in m["text"])
    # The confirmation must promise what is done: 12 tasks (or say #13 is kept), not 13.
    assert "13 tasks" not in asked["text"]


# --- As a file ------------------------------------------------------------------------------


async def test_as_a_file_sends_the_tasks_text_as_a_document(
    histories: None, ann: Chat, bob: Chat, telegram: FakeTelegram
) -> None:
    result = next(m for m in ann.messages if (m.text or "").startswith("Task #8 - text"))
    assert result.buttons() == text_buttons(8, ANN)
    assert "upload_document" not in telegram.chat_actions(ANN)

    answer = await ann.press_for(result, f"f:{ANN}:8")
    assert "text" not in answer
    await ann.wait_until(lambda: any(m.document is not None for m in ann.messages))

    (document,) = [m for m in ann.messages if m.document is not None]
    stored = await Task.get(user_id=ANN, user_number=8)
    assert document.document is not None
    assert document.document.decode("utf-8") == stored.result_text == ANN_TEXTS[8]
    assert document.filename == "task-8.txt" and document.text == "Task #8"
    assert telegram.chat_actions(ANN) == ["upload_document"]
    # Bob's long text came as a document with a preview; As a file under it sends it whole.
    (delivered_long,) = [m for m in bob.messages if m.document is not None]
    assert delivered_long.buttons() == text_buttons(3, BOB)
    assert delivered_long.text is not None and len(delivered_long.text) < 1024
    before = len(bob.messages)
    assert "text" not in await bob.press_for(delivered_long, f"f:{BOB}:3")
    document = (await bob.wait_for_messages(before + 1))[before]
    assert document.document is not None and document.document.decode("utf-8") == LONG_TEXT
    assert document.filename == "task-3.txt"
    assert await numbers_of(ANN) == list(range(1, 13))


async def test_in_a_group_only_the_owner_gets_a_text_as_a_file(
    histories: None, group: Group, coze: FakeCoze, telegram: FakeTelegram
) -> None:
    group.send(BOB, "hello everyone")
    group.send(ANN, f"@{group.bot} {ann_link(30)}")
    await delivered_number(ANN, 13)
    result = group.messages[-1]
    assert result.buttons() == text_buttons(13, ANN)

    assert (await group.press(BOB, result, f"f:{ANN}:13"))["text"] == NOT_YOURS
    await settled()
    assert not any(m.document is not None for m in group.messages)
    assert "upload_document" not in telegram.chat_actions(GROUP)

    await group.press(ANN, result, f"f:{ANN}:13")
    await telegram.wait_for(lambda: any(m.document is not None for m in group.messages))
    (document,) = [m for m in group.messages if m.document is not None]
    assert document.document == f"words of {ann_link(30)}".encode()
    assert telegram.chat_actions(GROUP) == ["upload_document"]


# --- /settings ------------------------------------------------------------------------------


async def test_always_as_a_file_survives_a_restart_and_can_be_switched_back(
    database_url: str, telegram: FakeTelegram, coze: FakeCoze, ann: Chat, bob: Chat
) -> None:
    coze.outcome_for = outcome
    settings = make_settings(database_url, telegram, coze, delivery=FAST)
    async with running_bot(settings):
        menu = await ann.ask("/settings")
        assert menu.text == "Texts come as messages (long ones as .txt files)."
        assert menu.buttons() == [
            ("Texts as messages", "s:msg"),
            ("Always as a file", "s:file"),
        ]
        assert (await ann.press_for(menu, "s:file"))["text"] == "Texts come as .txt files."
        await wait_for_edit(telegram, menu)
        assert menu.text == "Texts come as .txt files."

        ann.send(ann_link(1))
        await delivered(1)
        document = ann.messages[-1]
        assert document.document is not None
        assert document.document.decode("utf-8") == ANN_TEXTS[1]
        assert document.filename == "task-1.txt"
        assert document.buttons() == text_buttons(1, ANN)
        assert "upload_document" in telegram.chat_actions(ANN)
        # Bob chose nothing: his text comes as a message.
        bob.send(bob_link(1))
        await delivered(2)
        assert bob.messages[-1].document is None
        assert bob.messages[-1].text == f"Task #1 - text of {bob_link(1)}\n\n{BOB_TEXTS[1]}"

    async with running_bot(settings):
        ann.send(ann_link(2))
        await delivered(3)
        document = ann.messages[-1]
        assert document.document is not None
        assert document.document.decode("utf-8") == ANN_TEXTS[2]
        assert document.buttons() == text_buttons(2, ANN)
        again = await ann.ask("/get 1")  # /get follows the choice too
        assert again.document is not None and again.document.decode("utf-8") == ANN_TEXTS[1]

        menu = await ann.ask("/settings")
        assert menu.text == "Texts come as .txt files."
        await ann.press_for(menu, "s:msg")
        await wait_for_edit(telegram, menu)
        assert menu.text == "Texts come as messages (long ones as .txt files)."

        ann.send(ann_link(3))
        await delivered(4)
        message = ann.messages[-1]
        assert message.document is None
        assert message.text == f"Task #3 - text of {ann_link(3)}\n\n{ANN_TEXTS[3]}"
        assert message.buttons() == text_buttons(3, ANN)
        assert (await ann.ask_text("/get 2")).endswith(ANN_TEXTS[2])


async def test_a_short_text_sent_as_a_file_by_choice_is_not_called_long(
    bot: RunningBot, coze: FakeCoze, ann: Chat, telegram: FakeTelegram
) -> None:
    coze.outcome_for = outcome
    menu = await ann.ask("/settings")
    await ann.press_for(menu, "s:file")
    await wait_for_edit(telegram, menu)
    ann.send(ann_link(2))
    await delivered(1)
    document = ann.messages[-1]
    assert document.document is not None and document.text is not None
    assert document.text.startswith("Task #1")
    assert "the text is long" not in document.text

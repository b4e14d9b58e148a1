"""Inline buttons: what each carries (callback data, at most 64 bytes) and how it is read.

A button under a task names the task by its owner and the owner's own number
("r:<owner>:<number>"), so a press by anyone else is recognised as not theirs, and no global
task id is shown. Buttons sent before the per-user numbers ("retry:<task id>") still work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import Texts, number_of
from storage import Task


class Action(StrEnum):
    RETRY = "r"
    REFRESH = "rf"
    AS_FILE = "f"
    DELETE = "del"  # confirmed deletion of one task
    PAGE = "p"  # /tasks page
    LANGUAGE = "l"
    FILES = "s"  # /settings: always as a file or not
    FORGET = "fg"  # confirmed deletion of everything: "fg:<owner>"
    CANCEL = "x"  # "x:<owner>": only whom the question was for may answer it


@dataclass(frozen=True)
class Press:
    action: Action
    owner: int | None = None
    number: int | None = None
    task_id: int | None = None  # a button of the old kind: the global task id
    value: str = ""


_TASK = re.compile(r"^(r|rf|f|del):([0-9]{1,20}):([0-9]{1,12})$")
_LEGACY_RETRY = re.compile(r"^retry:([0-9]{1,12})$")
_PAGE = re.compile(r"^p:(o|n):([0-9]{1,12})$")
_LANGUAGE = re.compile(r"^l:(en|zh)$")
_FILES = re.compile(r"^s:(file|msg)$")
_OWNED = re.compile(r"^(fg|x):([0-9]{1,20})$")


def read(data: str | None) -> Press | None:
    """What a press asks for; None for data this bot never sent (forged or stale)."""
    data = data or ""
    if match := _TASK.match(data):
        return Press(Action(match.group(1)), int(match.group(2)), int(match.group(3)))
    if match := _LEGACY_RETRY.match(data):
        return Press(Action.RETRY, task_id=int(match.group(1)))
    if match := _PAGE.match(data):
        return Press(Action.PAGE, number=int(match.group(2)), value=match.group(1))
    if match := _LANGUAGE.match(data):
        return Press(Action.LANGUAGE, value=match.group(1))
    if match := _FILES.match(data):
        return Press(Action.FILES, value=match.group(1))
    if match := _OWNED.match(data):
        return Press(Action(match.group(1)), owner=int(match.group(2)))
    return None


def _task_data(action: Action, task: Task) -> str:
    return f"{action.value}:{task.user_id}:{number_of(task)}"


def under_text(
    texts: Texts, task: Task, *, retry: bool, refresh: bool, as_file: bool
) -> InlineKeyboardMarkup | None:
    """The buttons under a delivered outcome: Retry or Refresh, and As a file."""
    row = []
    if refresh:
        row.append(
            InlineKeyboardButton(
                texts.refresh_label, callback_data=_task_data(Action.REFRESH, task)
            )
        )
    elif retry:
        row.append(
            InlineKeyboardButton(texts.retry_label, callback_data=_task_data(Action.RETRY, task))
        )
    if as_file:
        row.append(
            InlineKeyboardButton(texts.file_label, callback_data=_task_data(Action.AS_FILE, task))
        )
    return InlineKeyboardMarkup([row]) if row else None


def pages(
    texts: Texts, older_than: int | None, newer_than: int | None
) -> InlineKeyboardMarkup | None:
    """Older/Newer under a page of /tasks: the tasks older than #older_than, newer than
    #newer_than (None: no such page)."""
    row = []
    if older_than is not None:
        row.append(InlineKeyboardButton(texts.older_label, callback_data=f"p:o:{older_than}"))
    if newer_than is not None:
        row.append(InlineKeyboardButton(texts.newer_label, callback_data=f"p:n:{newer_than}"))
    return InlineKeyboardMarkup([row]) if row else None


def languages() -> InlineKeyboardMarkup:
    # Each language's name in itself: whoever reads the menu finds their own.
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("中文", callback_data="l:zh"),
                InlineKeyboardButton("English", callback_data="l:en"),
            ]
        ]
    )


def file_settings(texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(texts.as_messages_label, callback_data="s:msg"),
                InlineKeyboardButton(texts.as_files_label, callback_data="s:file"),
            ]
        ]
    )


def confirm_delete(texts: Texts, task: Task) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.delete_label, callback_data=_task_data(Action.DELETE, task)
                ),
                InlineKeyboardButton(texts.cancel_label, callback_data=f"x:{task.user_id}"),
            ]
        ]
    )


def confirm_forget(texts: Texts, user_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(texts.delete_label, callback_data=f"fg:{user_id}"),
                InlineKeyboardButton(texts.cancel_label, callback_data=f"x:{user_id}"),
            ]
        ]
    )

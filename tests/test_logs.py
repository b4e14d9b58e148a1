"""JSON log lines about a task carry its task id and run id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import JsonLines
from bot.runtime import RunningBot
from simulators.coze import FakeCoze
from storage import Task
from tasks.log_context import TaskContext
from tests.conftest import Conversation, delivered


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    handler.addFilter(TaskContext())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.asyncio
async def test_lines_about_a_task_carry_its_task_id_and_run_id(
    json_log: io.StringIO, bot: RunningBot, chat: Conversation, coze: FakeCoze
) -> None:
    chat.send("https://v.douyin.com/logged/")
    await chat.wait_for_messages(2)
    await delivered(1)
    task = await Task.get(id=1)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    started = [e for e in lines if "started (execute_id" in e["message"]]
    callback = [e for e in lines if e["message"].startswith("callback for run")]
    assert started and started[0]["task_id"] == 1 and started[0]["run_id"] == task.run_id
    assert callback and callback[0]["run_id"] == task.run_id
    # Lines about no task carry no ids.
    listening = [e for e in lines if e["message"].startswith("listening on")]
    assert listening and all("task_id" not in e for e in listening)

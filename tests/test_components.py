"""Parts on their own, each against its real dependency: the Coze client against the fake Coze,
the state machine against a real SQLite file, the web app against a real socket."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from tortoise import Tortoise
from tortoise.migrations.api import migrate

from coze import CozeWorkflowClient, RunStatus
from simulators.coze import FakeCoze, WorkflowOutcome
from storage import Task, TaskState, open_database, repository
from storage.db import tortoise_config
from storage.repository import ApplyResult, Outcome
from webhook import HEALTH_CHECK, READINESS, create_app

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def database(tmp_path: Path) -> AsyncIterator[None]:
    async with open_database(f"sqlite://{tmp_path}/db.sqlite3"):
        yield


def client_for(coze: FakeCoze) -> CozeWorkflowClient:
    return CozeWorkflowClient(
        base_url=coze.base_url,
        token=coze.token,
        workflow_id=coze.workflow_id,
        url_parameter="url",
        callback_url="http://127.0.0.1:9/webhook/coze",  # nobody listens: callbacks are lost
        callback_secret="a-secret-of-sixteen-chars",
        timeout_seconds=5,
    )


@pytest.mark.parametrize("mode", ["variables", "text"])
async def test_run_history_reads_running_then_the_text(
    mode: Literal["variables", "text"],
) -> None:
    async with FakeCoze(output_mode=mode, callback_timeout=0.5, callback_retries=0) as coze:
        coze.outcome_for = lambda url: WorkflowOutcome(text="第一句。\nSecond line.", duration=0.3)
        client = client_for(coze)
        try:
            run = await client.start("https://v.douyin.com/x/", "run-1")
            assert (await client.run_history(run.execute_id)).status is RunStatus.RUNNING
            await coze.wait_for(lambda: coze.runs[run.execute_id].status != "Running")
            history = await client.run_history(run.execute_id)
        finally:
            await client.aclose()
    assert history.status is RunStatus.SUCCESS
    assert history.text == "第一句。\nSecond line."


async def test_run_history_of_a_failed_run_carries_coze_error() -> None:
    async with FakeCoze(callback_timeout=0.5, callback_retries=0) as coze:
        client = client_for(coze)
        try:
            run = await client.start("https://v.douyin.com/fail/", "run-2")
            await coze.wait_for(lambda: coze.runs[run.execute_id].status != "Running")
            history = await client.run_history(run.execute_id)
        finally:
            await client.aclose()
    assert history.status is RunStatus.FAIL
    assert history.error_code != 0 and history.error_message == "video unavailable"
    assert history.text == ""


async def test_a_callback_that_overtakes_the_start_reply_still_settles_the_task(
    database: None,
) -> None:
    await repository.upsert_user(1, "Ann", None)
    task = await repository.create_task(
        user_id=1, chat_id=1, request_message_id=1, input_url="https://b23.tv/x", run_id="r1"
    )
    outcome = Outcome(succeeded=True, text="fast words")

    assert await repository.apply_outcome("r1", outcome, via_callback=True) is ApplyResult.APPLIED
    started = await repository.mark_started(
        task_id=task.id, run_id="r1", execute_id="7400", next_check_at=task.created_at
    )

    assert started is False  # the state stays completed ...
    stored = await Task.get(id=task.id)
    assert stored.state == TaskState.COMPLETED and stored.result_text == "fast words"
    assert stored.execute_id == "7400"  # ... and the run's id is still recorded
    again = await repository.apply_outcome("r1", outcome, via_callback=True)
    assert again is ApplyResult.IGNORED


async def test_readyz_is_503_when_the_database_does_not_answer_or_telegram_is_not_known() -> None:
    database = {"answers": False}

    async def ping() -> bool:
        return database["answers"]

    app = create_app(max_callback_bytes=1024)
    app[HEALTH_CHECK] = ping
    app[READINESS].telegram = True
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["database"] == "unreachable"
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200  # alive all the same: a restart would not help
            database["answers"] = True
            app[READINESS].telegram = False
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["telegram"] == "not connected"
            app[READINESS].telegram = True
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


async def test_a_database_of_the_first_schema_is_upgraded_with_its_tasks_kept(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/old.sqlite3"
    await migrate(config=tortoise_config(url), target="models.0001_initial")
    with sqlite3.connect(tmp_path / "old.sqlite3") as db:
        db.execute(
            "INSERT INTO users (id, first_name, extract_count, created_at, updated_at)"
            " VALUES (7, 'Ann', 0, '2026-01-01', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO tasks (user_id, chat_id, request_message_id, input_url, run_id, state,"
            " progress, retry_count, callback_received, counted, notification_sent,"
            " undeliverable, delivery_attempts, created_at, updated_at)"
            " VALUES (7, 7, 1, 'https://b23.tv/old', 'run-old', 'processing', 0, 0, 0, 0, 0, 0,"
            " 0, '2026-01-01', '2026-01-01')"
        )
    await Tortoise.close_connections()

    async with open_database(url):
        (task,) = await Task.all()
        assert task.run_id == "run-old" and task.state == TaskState.PROCESSING
        assert task.delivered_parts == 0 and task.checks == 0 and not task.send_timed_out
        assert await repository.newest_update_id() is None  # the inbox exists, empty

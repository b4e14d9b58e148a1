"""coze.client against the fake Coze: each refusal Coze may answer is classified from what
cozepy raises and what Coze sent, and run history settles from every reply shape Coze sends."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from cozepy import CozeAPIError, CozeInvalidEventError, CozePKCEAuthError
from cozepy.exception import CozePKCEAuthErrorType

from bot import texts
from bot.config import Settings
from bot.runtime import running_bot
from coze import CozeCallError, CozeWorkflowClient, RunStatus, parse_output
from coze.client import OPERATOR_HINTS, ErrorClass, classify
from simulators.coze import (
    ACCOUNT_IN_ARREARS,
    FAIL_ERROR_CODE,
    MODEL_SERVICE_IN_ARREARS,
    RISK_CONTROL,
    TOKEN_INVALID,
    CozeFault,
    FakeCoze,
    WorkflowOutcome,
)
from storage import Task, TaskState
from tests.conftest import Conversation, delivered, make_settings

TOKEN = "pat_secret_test_token_0123456789"
TEXT = '第一段：你好 🎬\n\nSecond paragraph with "quotes" and a \\ backslash.'

# ---- classify(), on the exception alone ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "transient", "hint_words"),
    [
        (
            CozeAPIError(700012006, "access token invalid", "log1"),
            ErrorClass.CONFIG,
            False,
            ["personal access token", "coze.token", "COZE_API_TOKEN", "coze.api_base_url"],
        ),
        (CozeAPIError(4019, "arrears", "log1"), ErrorClass.QUOTA, False, ["top up the balance"]),
        (CozeAPIError(4022, "arrears", "log1"), ErrorClass.QUOTA, False, ["top up the balance"]),
        (CozeAPIError(4102, "risk control", "log1"), ErrorClass.BUSY, True, ["risk control"]),
        # A non-JSON body: cozepy puts the HTTP status in `code`.
        (CozeAPIError(503, "<html>", "log1"), ErrorClass.BUSY, True, ["busy or unreachable"]),
        (CozeAPIError(401, "Unauthorized", "log1"), ErrorClass.UNKNOWN, False, ["logid"]),
        (CozeAPIError(404, "Not Found", "log1"), ErrorClass.UNKNOWN, False, ["logid"]),
        (CozeAPIError(None, "some message", "log1"), ErrorClass.UNKNOWN, False, ["logid"]),
        (
            CozePKCEAuthError(CozePKCEAuthErrorType.EXPIRED_TOKEN, "log1"),
            ErrorClass.CONFIG,
            False,
            ["coze.token"],
        ),
        (
            CozePKCEAuthError(CozePKCEAuthErrorType.SLOW_DOWN, "log1"),
            ErrorClass.BUSY,
            True,
            ["busy"],
        ),
        (CozeInvalidEventError("f", "d", "log1"), ErrorClass.UNKNOWN, False, ["logid"]),
        (ValueError("odd"), ErrorClass.UNKNOWN, False, ["logid"]),
    ],
    ids=[
        "700012006",
        "4019",
        "4022",
        "4102",
        "http-503-html",
        "http-401-text",
        "http-404-text",
        "no-code",
        "pkce-expired",
        "pkce-slow-down",
        "invalid-event",
        "other",
    ],
)
def test_classify_an_exception(
    error: BaseException, kind: ErrorClass, transient: bool, hint_words: list[str]
) -> None:
    classified = classify(error)
    assert (classified.kind, classified.transient) == (kind, transient)
    for words in hint_words:
        assert words in classified.operator_hint
    if not isinstance(error, ValueError):
        assert "log1" in classified.detail


def test_the_earlier_hints_are_kept() -> None:
    assert {4000, 4008, 4011, 4100, 4101, 4200, 6003} <= set(OPERATOR_HINTS)
    assert {700012006, 4019, 4022, 4102} <= set(OPERATOR_HINTS)


def test_a_long_page_is_cut_short_in_the_detail() -> None:
    page = "<html>" + "x" * 5000 + "\n</html>"
    detail = classify(CozeAPIError(502, page, "log1")).detail
    assert len(detail) < 400 and "\n" not in detail and "HTTP 502" in detail


# ---- through cozepy and the fake: every shape a refusal can take ------------------------------


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeCoze]:
    coze = FakeCoze(token=TOKEN, callbacks_enabled=False)
    await coze.start()
    yield coze
    await coze.stop()


@pytest_asyncio.fixture
async def client(fake: FakeCoze) -> AsyncIterator[CozeWorkflowClient]:
    coze = CozeWorkflowClient(
        base_url=fake.base_url,
        token=TOKEN,
        workflow_id=fake.workflow_id,
        url_parameter="url",
        callback_url="http://127.0.0.1:9/webhook/coze",  # callbacks are off in this fake
        callback_secret="test-callback-secret-0123456789",
        timeout_seconds=5.0,
    )
    yield coze
    await coze.aclose()


def body_fault(body: dict[str, Any], http_status: int = 200) -> CozeFault:
    return CozeFault(0, "custom body", http_status=http_status, body=body)


def page_fault(http_status: int) -> CozeFault:
    return CozeFault(0, "", http_status=http_status)  # HTML for 5xx, plain text otherwise


# (fault, kind, transient, Coze's code as the bot must see it)
REFUSALS = [
    pytest.param(TOKEN_INVALID, ErrorClass.CONFIG, False, 700012006, id="700012006-http-401"),
    pytest.param(
        CozeFault(700012006, "access token invalid"),
        ErrorClass.CONFIG,
        False,
        700012006,
        id="700012006-http-200",
    ),
    pytest.param(  # no "msg": cozepy does not raise CozeAPIError, its model fails instead
        body_fault({"code": 700012006, "message": "access token invalid"}, 401),
        ErrorClass.CONFIG,
        False,
        700012006,
        id="700012006-message-not-msg",
    ),
    pytest.param(  # cozepy: CozeAPIError(code=None, msg=error_message)
        body_fault({"code": 700012006, "error_message": "access token invalid"}, 401),
        ErrorClass.CONFIG,
        False,
        700012006,
        id="700012006-error-message",
    ),
    pytest.param(
        body_fault({"error_code": "700012006", "error_message": "access token invalid"}, 401),
        ErrorClass.CONFIG,
        False,
        700012006,
        id="700012006-error-code-string",
    ),
    pytest.param(
        body_fault({"code": "700012006", "msg": "access token invalid"}, 401),
        ErrorClass.CONFIG,
        False,
        700012006,
        id="700012006-code-string",
    ),
    pytest.param(  # cozepy: CozePKCEAuthError
        body_fault({"error_code": "expired_token", "error_message": "expired"}, 401),
        ErrorClass.CONFIG,
        False,
        None,
        id="pkce-expired-token",
    ),
    pytest.param(ACCOUNT_IN_ARREARS, ErrorClass.QUOTA, False, 4019, id="4019"),
    pytest.param(MODEL_SERVICE_IN_ARREARS, ErrorClass.QUOTA, False, 4022, id="4022"),
    pytest.param(RISK_CONTROL, ErrorClass.BUSY, True, 4102, id="4102"),
    pytest.param(
        CozeFault(4102, "try again later", http_status=429),
        ErrorClass.BUSY,
        True,
        4102,
        id="4102-http-429",
    ),
    pytest.param(page_fault(502), ErrorClass.BUSY, True, None, id="html-502"),
    pytest.param(page_fault(503), ErrorClass.BUSY, True, None, id="html-503"),
    pytest.param(page_fault(429), ErrorClass.BUSY, True, None, id="text-429"),
    pytest.param(page_fault(401), ErrorClass.UNKNOWN, False, None, id="text-401"),
    pytest.param(page_fault(404), ErrorClass.UNKNOWN, False, None, id="text-404"),
    pytest.param(
        body_fault({"error": "upstream failed"}, 500),
        ErrorClass.BUSY,
        True,
        None,
        id="json-without-code-500",
    ),
    pytest.param(
        body_fault({"error": "unauthorized"}, 401),
        ErrorClass.UNKNOWN,
        False,
        None,
        id="json-without-code-401",
    ),
    pytest.param(CozeFault(0, "", drop_connection=True), ErrorClass.BUSY, True, None, id="dropped"),
]


def assert_refusal(
    exc: CozeCallError, kind: ErrorClass, transient: bool, code: int | None, dropped: bool
) -> None:
    assert (exc.kind, exc.transient, exc.code) == (kind, transient, code)
    assert TOKEN not in exc.detail and TOKEN not in exc.operator_hint
    if not dropped:
        assert "logid 20" in exc.detail  # the fake's logid (a timestamp first), for Coze support
    if code is not None:
        assert str(code) in exc.detail
        assert exc.operator_hint == OPERATOR_HINTS[code]


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "kind", "transient", "code"), REFUSALS)
async def test_a_refused_start_is_classified(
    fake: FakeCoze,
    client: CozeWorkflowClient,
    fault: CozeFault,
    kind: ErrorClass,
    transient: bool,
    code: int | None,
) -> None:
    fake.fail_next_start_with(fault)
    with pytest.raises(CozeCallError) as err:
        await client.start("https://v.douyin.com/abc/", "run-1")
    assert_refusal(err.value, kind, transient, code, fault.drop_connection)
    assert fake.runs == {}
    started = await client.start("https://v.douyin.com/abc/", "run-2")  # it passed
    assert started.execute_id in fake.runs


@pytest.mark.asyncio
@pytest.mark.parametrize(("fault", "kind", "transient", "code"), REFUSALS)
async def test_a_refused_history_check_is_classified(
    fake: FakeCoze,
    client: CozeWorkflowClient,
    fault: CozeFault,
    kind: ErrorClass,
    transient: bool,
    code: int | None,
) -> None:
    started = await client.start("https://v.douyin.com/abc/", "run-1")
    await fake.drain()
    fake.fail_next_history_with(fault)
    with pytest.raises(CozeCallError) as err:
        await client.run_history(started.execute_id)
    assert_refusal(err.value, kind, transient, code, fault.drop_connection)
    assert (await client.run_history(started.execute_id)).status is RunStatus.SUCCESS


@pytest.mark.asyncio
async def test_concurrent_calls_each_see_their_own_reply(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    # Only the reply carries the code here (no "msg": cozepy raises a validation error), so
    # each call must read its own reply even when many are under way at once.
    runs = [await client.start(f"https://v.douyin.com/{n}/", f"run-{n}") for n in range(8)]
    codes = {run.execute_id: (4102 if n % 2 else 700012006) for n, run in enumerate(runs)}

    def refuse(execute_id: str) -> CozeFault:
        return body_fault({"code": codes[execute_id], "message": "refused"}, 401)

    fake.history_fault = refuse
    results = await asyncio.gather(
        *(client.run_history(run.execute_id) for run in runs), return_exceptions=True
    )
    for run, result in zip(runs, results, strict=True):
        assert isinstance(result, CozeCallError)
        assert result.code == codes[run.execute_id]


# ---- run history: every shape of reply settles -----------------------------------------------


async def finished_run(fake: FakeCoze, client: CozeWorkflowClient, outcome: WorkflowOutcome) -> str:
    fake.outcome_for = lambda url: outcome
    started = await client.start("https://v.douyin.com/abc/", "run-1")
    await fake.drain()
    return started.execute_id


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["variables", "text"])
async def test_documented_reply_without_is_output_trimmed_settles(
    fake: FakeCoze, client: CozeWorkflowClient, mode: str
) -> None:
    fake.history_shape = "documented"
    fake.output_mode = "text" if mode == "text" else "variables"
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT))
    history = await client.run_history(execute_id)
    assert history.status is RunStatus.SUCCESS
    assert history.text == TEXT
    assert history.output_trimmed is False
    assert (history.error_code, history.error_message) == (0, "")


@pytest.mark.asyncio
async def test_documented_reply_while_running_and_failed(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    fake.history_shape = "documented"
    fake.outcome_for = lambda url: WorkflowOutcome(
        status="Fail",
        error_code=FAIL_ERROR_CODE,
        error_message="video unavailable",
        duration=0.3,
    )
    started = await client.start("https://v.douyin.com/abc/", "run-1")
    running = await client.run_history(started.execute_id)
    assert (running.status, running.text, running.output_trimmed) == (
        RunStatus.RUNNING,
        "",
        False,
    )
    await fake.drain()
    failed = await client.run_history(started.execute_id)
    assert failed.status is RunStatus.FAIL
    assert (failed.error_code, failed.error_message) == (FAIL_ERROR_CODE, "video unavailable")
    assert failed.text == "" and failed.output_trimmed is False


@pytest.mark.asyncio
@pytest.mark.parametrize("shape", ["complete", "documented"])
@pytest.mark.parametrize("mode", ["variables", "text"])
async def test_a_trimmed_output_keeps_the_text_up_to_the_cut(
    fake: FakeCoze, client: CozeWorkflowClient, shape: str, mode: str
) -> None:
    fake.history_shape = "documented" if shape == "documented" else "complete"
    fake.output_mode = "text" if mode == "text" else "variables"
    text = "".join(f'第{n}段：你好 🎬 "quoted" \\ line\n' for n in range(200))
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=text, trim_output_at=3000))
    history = await client.run_history(execute_id)
    assert history.status is RunStatus.SUCCESS
    assert history.output_trimmed is True
    assert 1000 < len(history.text) < len(text)
    assert text.startswith(history.text)


@pytest.mark.asyncio
async def test_an_output_trimmed_to_nothing(fake: FakeCoze, client: CozeWorkflowClient) -> None:
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT, trim_output_at=0))
    history = await client.run_history(execute_id)
    assert (history.status, history.text, history.output_trimmed) == (RunStatus.SUCCESS, "", True)


@pytest.mark.asyncio
async def test_nulls_and_missing_fields_are_tolerated(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    fake.history_shape = "documented"
    nulls = ("error_code", "error_message", "bot_id", "debug_url", "create_time", "logid")
    fake.history_edit = lambda record: {
        **{key: value for key, value in record.items() if key not in ("cost", "token")},
        **dict.fromkeys(nulls),
        "is_output_trimmed": None,
        "usage": None,
        "node_execute_status": None,
    }
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT))
    history = await client.run_history(execute_id)
    assert (history.status, history.text, history.output_trimmed) == (
        RunStatus.SUCCESS,
        TEXT,
        False,
    )
    assert (history.error_code, history.error_message) == (0, "")

    fake.history_edit = lambda record: {"execute_status": "Success", "output": None}
    history = await client.run_history(execute_id)
    assert (history.status, history.text, history.output_trimmed) == (RunStatus.SUCCESS, "", False)


@pytest.mark.asyncio
async def test_a_failed_run_with_an_error_code_as_a_number(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    outcome = WorkflowOutcome(status="Fail", error_code=FAIL_ERROR_CODE, error_message="gone")
    execute_id = await finished_run(fake, client, outcome)
    fake.history_edit = lambda record: {**record, "error_code": FAIL_ERROR_CODE}
    history = await client.run_history(execute_id)
    assert (history.status, history.error_code) == (RunStatus.FAIL, FAIL_ERROR_CODE)


@pytest.mark.asyncio
async def test_an_unknown_execute_status_is_an_error(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT))
    fake.history_edit = lambda record: {**record, "execute_status": "Interrupted"}
    with pytest.raises(CozeCallError) as err:
        await client.run_history(execute_id)
    assert err.value.kind is ErrorClass.UNKNOWN and not err.value.transient
    assert "Interrupted" in err.value.detail and "logid 20" in err.value.detail


@pytest.mark.asyncio
async def test_a_reply_without_a_record_is_looked_at_again(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT))
    fake.fail_next_history_with(body_fault({"code": 0, "msg": "", "data": []}))
    with pytest.raises(CozeCallError) as err:
        await client.run_history(execute_id)
    assert err.value.transient and "no record" in err.value.detail
    assert (await client.run_history(execute_id)).text == TEXT


@pytest.mark.asyncio
async def test_risk_control_on_history_is_passing_trouble(
    fake: FakeCoze, client: CozeWorkflowClient
) -> None:
    execute_id = await finished_run(fake, client, WorkflowOutcome(text=TEXT))
    fake.fail_next_history_with(RISK_CONTROL)
    with pytest.raises(CozeCallError) as err:
        await client.run_history(execute_id)
    assert (err.value.kind, err.value.transient, err.value.code) == (ErrorClass.BUSY, True, 4102)
    history = await client.run_history(execute_id)  # later, it passes
    assert (history.status, history.text) == (RunStatus.SUCCESS, TEXT)


# ---- parse_output on an output cut short -----------------------------------------------------


@pytest.mark.parametrize("mode", ["variables", "text"])
def test_every_cut_past_the_start_of_the_text_keeps_a_prefix(mode: str) -> None:
    text = '你好 🎬 "quoted"\n\\ \u00e9 \U0001f600 end'
    inner: dict[str, Any] = (
        {"text": text}
        if mode == "variables"
        else {"content_type": 1, "data": text, "original_result": None, "type_for_model": 2}
    )
    whole = json.dumps(
        {"Output": json.dumps(inner, ensure_ascii=False, separators=(",", ":"))},
        separators=(",", ":"),  # ASCII escapes too (\uXXXX, surrogate pairs)
    )
    start = whole.index("\\u")  # the first character of the text
    seen = set()
    for cut in range(start, len(whole) + 1):
        got = parse_output(whole[:cut])
        assert text.startswith(got), (cut, whole[:cut], got)
        assert not any("\ud800" <= char <= "\udfff" for char in got)  # no half emoji
        seen.add(got)
    assert text in seen and len(seen) > len(text) // 2


def test_text_that_is_not_json_stays_as_it_is() -> None:
    assert parse_output('{"not json') == '{"not json'
    assert parse_output("plain") == "plain"


# ---- through the bot: a run whose callback is lost settles from its run history ---------------


def quick_checks(database_url: str, chat: Conversation, coze: FakeCoze) -> Settings:
    return make_settings(
        database_url,
        chat.telegram,
        coze,
        tasks={"reconcile_after_seconds": 0.05, "max_check_interval_seconds": 0.1},
    )


def text_sent(chat: Conversation) -> str:
    return "\n".join(message.text or "" for message in chat.messages[1:])


@pytest.mark.asyncio
async def test_the_bot_settles_a_task_from_the_documented_reply(
    database_url: str, chat: Conversation, coze: FakeCoze
) -> None:
    coze.history_shape = "documented"
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, callback="lose")
    async with running_bot(quick_checks(database_url, chat, coze)):
        chat.send("https://v.douyin.com/documented/")
        await delivered()
        task = await Task.get(id=1)
    assert task.state == TaskState.COMPLETED and task.result_text == TEXT
    assert TEXT in text_sent(chat)


@pytest.mark.asyncio
async def test_the_bot_settles_a_task_from_a_trimmed_output(
    database_url: str, chat: Conversation, coze: FakeCoze
) -> None:
    coze.history_shape = "documented"
    text = "".join(f"Paragraph {n}: words said in the video.\n" for n in range(100))
    coze.outcome_for = lambda url: WorkflowOutcome(text=text, callback="lose", trim_output_at=1500)
    async with running_bot(quick_checks(database_url, chat, coze)):
        chat.send("https://v.douyin.com/trimmed/")
        await delivered()
        task = await Task.get(id=1)
    assert task.state == TaskState.COMPLETED and task.output_trimmed
    assert task.result_text and 1000 < len(task.result_text) < len(text)
    assert text.startswith(task.result_text)
    assert "Paragraph 20: words said in the video." in text_sent(chat)
    # The user is told that Coze cut the text.
    assert texts.DEFAULT.trimmed_note in text_sent(chat)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "level", "words"),
    [
        (RISK_CONTROL, logging.WARNING, "4102"),
        (TOKEN_INVALID, logging.ERROR, "coze.api_base_url"),
    ],
    ids=["4102", "700012006"],
)
async def test_a_refused_history_check_is_made_again_later(
    database_url: str,
    chat: Conversation,
    coze: FakeCoze,
    caplog: pytest.LogCaptureFixture,
    fault: CozeFault,
    level: int,
    words: str,
) -> None:
    coze.outcome_for = lambda url: WorkflowOutcome(text=TEXT, callback="lose")
    coze.fail_next_history_with(fault, count=2)
    caplog.set_level(logging.INFO)
    async with running_bot(quick_checks(database_url, chat, coze)):
        chat.send("https://v.douyin.com/refused/")
        await delivered()
        assert (await Task.get(id=1)).state == TaskState.COMPLETED
    assert TEXT in text_sent(chat)
    assert coze.history_calls == 3
    refusals = [
        r
        for r in caplog.records
        if r.name.startswith("tasks") and str(fault.code) in r.getMessage()
    ]
    assert len(refusals) == 2
    assert all(r.levelno == level and words in r.getMessage() for r in refusals)
    assert coze.token not in caplog.text

"""The Coze fake, driven by the real cozepy client and a real HTTP callback receiver."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pydantic
import pytest
import pytest_asyncio
from aiohttp import web
from cozepy import (
    AsyncCoze,
    AsyncTokenAuth,
    CozeAPIError,
    WorkflowExecuteStatus,
    WorkflowRunHistory,
)
from cozepy.request import AsyncHTTPClient

from simulators.coze import (
    ACCOUNT_IN_ARREARS,
    MODEL_SERVICE_IN_ARREARS,
    RISK_CONTROL,
    TOKEN_INVALID,
    CozeFault,
    FakeCoze,
    WorkflowOutcome,
    default_outcome_for,
)

TOKEN = "pat_test_token"
WORKFLOW_ID = "7400000000000000001"


class Receiver:
    """A tiny aiohttp callback target; answers the queued statuses, then 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.delay = 0.0  # seconds to sit on each request before answering
        self.received = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        assert request.content_type == "application/json"
        self.bodies.append(json.loads(raw.decode("utf-8")))
        self.received.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"ok": status == 200}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook/coze", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook/coze"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


MakeFake = Callable[..., Awaitable[FakeCoze]]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    yield rec
    await rec.stop()


@pytest_asyncio.fixture
async def make_fake(receiver: Receiver) -> AsyncIterator[MakeFake]:
    # Depends on `receiver` so that fakes stop first: an aiohttp server whose cleanup starts
    # while a callback connection is being opened drops that request and waits until the
    # client gives up (the fake's callback_timeout, 10 s).
    fakes: list[FakeCoze] = []

    async def make(**kwargs: Any) -> FakeCoze:
        fake = FakeCoze(**kwargs)
        await fake.start(port=0)
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        await fake.stop()


@pytest_asyncio.fixture
async def fake(make_fake: MakeFake) -> FakeCoze:
    return await make_fake()


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[Callable[..., AsyncCoze]]:
    http_clients: list[AsyncHTTPClient] = []

    def make(base_url: str, token: str = TOKEN) -> AsyncCoze:
        http = AsyncHTTPClient(timeout=5.0)  # type: ignore[no-untyped-call]
        http_clients.append(http)
        return AsyncCoze(auth=AsyncTokenAuth(token), base_url=base_url, http_client=http)

    yield make
    for http in http_clients:
        await http.aclose()


async def history(coze: AsyncCoze, execute_id: str) -> WorkflowRunHistory:
    return await coze.workflows.runs.run_histories.retrieve(
        workflow_id=WORKFLOW_ID, execute_id=execute_id
    )


def params(
    receiver_url: str, link: str = "https://v.douyin.com/abc123/", task: str = "t-1"
) -> dict[str, Any]:
    return {
        "url": link,
        "task_id": task,
        "callback_url": receiver_url,
        "callback_token": f"tok-{task}",
    }


def parse_output(output: str) -> Any:
    outer = json.loads(output)
    return json.loads(outer["Output"])


# ---- starting a run ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_start_parses_execute_id_and_debug_url(fake, receiver, clients):
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    assert run.execute_id and len(run.execute_id) == 19 and run.execute_id.isdigit()
    assert f"execute_id={run.execute_id}" in run.debug_url
    assert f"workflow_id={WORKFLOW_ID}" in run.debug_url
    assert run.response.logid  # X-Tt-Logid header
    stored = fake.runs[run.execute_id]
    assert stored.parameters == params(receiver.url)
    assert fake.runs_for_task("t-1") == [stored]
    assert fake.runs_for_task("other") == []


@pytest.mark.asyncio
async def test_execute_ids_are_deterministic_with_seed(make_fake, receiver, clients):
    ids = []
    for seed in (7, 7, 8):
        fake = await make_fake(seed=seed, callbacks_enabled=False)
        run = await clients(fake.base_url).workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
        )
        ids.append(run.execute_id)
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.asyncio
async def test_callback_arrives_with_given_task_id_and_token(fake, receiver, clients):
    coze = clients(fake.base_url)
    p = params(receiver.url, task="run-42")
    p["callback_token"] = "a3f1" * 16
    run = await coze.workflows.runs.create(workflow_id=WORKFLOW_ID, parameters=p, is_async=True)
    await fake.wait_for(lambda: fake.runs[run.execute_id].finished, timeout=3)
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body == {
        "task_id": "run-42",
        "token": "a3f1" * 16,
        "status": "success",
        "text": default_outcome_for(p["url"]).text,
        "error": "",
        "progress": 100,
    }
    assert p["url"] in body["text"]
    assert fake.runs[run.execute_id].callback_replies == [200]


# ---- run history -----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["variables", "text"])
async def test_history_running_then_success(make_fake, receiver, clients, mode):
    fake = await make_fake(output_mode=mode)
    text = '第一段：你好 🎬\n\nSecond paragraph with "quotes" and a \\ backslash.'
    fake.outcome_for = lambda url: WorkflowOutcome(text=text, duration=0.3)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.RUNNING
    assert hist.output == '{"Output":"null"}'
    assert hist.error_code == 0
    assert hist.is_output_trimmed is False

    await fake.wait_for(lambda: fake.runs[run.execute_id].status == "Success", timeout=3)
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.SUCCESS
    inner = parse_output(hist.output)
    if mode == "variables":
        assert inner == {"text": text}
    else:
        assert inner == {
            "content_type": 1,
            "data": text,
            "original_result": None,
            "type_for_model": 2,
        }
    assert hist.run_mode == 2 and hist.bot_id == "0" and hist.connector_id == "1024"
    assert hist.usage is not None and hist.usage.token_count > 0
    assert hist.logid and hist.debug_url.endswith("execute_mode=2")
    assert fake.history_calls == 2


@pytest.mark.asyncio
async def test_history_record_has_every_documented_field(fake, receiver, clients):
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    hist = await history(coze, run.execute_id)
    assert hist._raw_response is not None
    raw = hist._raw_response.json()
    assert raw["code"] == 0 and raw["msg"] == "" and raw["detail"]["logid"]
    assert len(raw["data"]) == 1
    record = raw["data"][0]
    assert set(record) == {
        "execute_id", "execute_status", "output", "error_code", "error_message", "debug_url",
        "is_output_trimmed", "create_time", "update_time", "bot_id", "connector_id",
        "connector_uid", "run_mode", "logid", "usage",
    }  # fmt: skip
    assert record["error_code"] == ""
    assert isinstance(record["create_time"], int) and isinstance(record["update_time"], int)
    assert set(record["usage"]) == {"input_count", "output_count", "token_count"}


@pytest.mark.asyncio
async def test_fail_run_history_and_callback(fake, receiver, clients):
    coze = clients(fake.base_url)
    p = params(receiver.url, link="https://v.douyin.com/fail-xyz/")
    run = await coze.workflows.runs.create(workflow_id=WORKFLOW_ID, parameters=p, is_async=True)
    await fake.drain()
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.FAIL
    assert hist.error_code == 720701013
    assert hist.error_message == "video unavailable"
    assert hist._raw_response is not None
    raw_record = hist._raw_response.json()["data"][0]
    assert raw_record["error_code"] == "720701013"  # a string on the wire
    assert [b["status"] for b in receiver.bodies] == ["failed"]
    assert receiver.bodies[0]["error"] == "video unavailable"
    assert receiver.bodies[0]["text"] == ""


@pytest.mark.asyncio
async def test_history_unknown_execute_id_is_4314(fake, clients):
    coze = clients(fake.base_url)
    with pytest.raises(CozeAPIError) as err:
        await history(coze, "7499999999999999999")
    assert err.value.code == 4314
    assert err.value.logid
    assert fake.history_calls == 1


@pytest.mark.asyncio
async def test_fail_next_history(fake, receiver, clients):
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    fake.fail_next_history(4009, "system busy")
    with pytest.raises(CozeAPIError) as err:
        await history(coze, run.execute_id)
    assert err.value.code == 4009
    hist = await history(coze, run.execute_id)
    assert hist.execute_id == run.execute_id
    assert fake.history_calls == 2


# The fields of the example reply in Coze's run-history docs (workflow_history).
DOCUMENTED_RECORD_FIELDS = {
    "update_time", "cost", "output", "bot_id", "token", "execute_status", "connector_uid",
    "run_mode", "connector_id", "logid", "debug_url", "error_code", "error_message",
    "execute_id", "create_time",
}  # fmt: skip


async def raw_history(fake: FakeCoze, execute_id: str, token: str = TOKEN) -> httpx.Response:
    """The run-history reply as it is on the wire (cozepy cannot read every shape)."""
    async with httpx.AsyncClient() as http:
        return await http.get(
            f"{fake.base_url}/v1/workflows/{WORKFLOW_ID}/run_histories/{execute_id}",
            headers={"Authorization": f"Bearer {token}"},
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("outcome", ["Success", "Fail"])
async def test_documented_history_shape(make_fake, receiver, clients, outcome):
    fake = await make_fake(history_shape="documented")
    fake.outcome_for = lambda url: WorkflowOutcome(
        status=outcome, text="hello", error_code=720701013, error_message="video unavailable"
    )
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    reply = await raw_history(fake, run.execute_id)
    assert reply.status_code == 200
    body = reply.json()
    assert body["code"] == 0 and body["msg"] == "" and body["detail"]["logid"]
    (record,) = body["data"]
    assert set(record) == DOCUMENTED_RECORD_FIELDS  # no is_output_trimmed, no usage
    assert record["execute_id"] == run.execute_id and record["execute_status"] == outcome
    assert isinstance(record["cost"], str) and isinstance(record["token"], str)
    if outcome == "Success":
        assert parse_output(record["output"]) == {"text": "hello"}
        assert (record["error_code"], record["error_message"]) == ("", "")
    else:
        assert record["output"] == '{"Output":"null"}'
        assert (record["error_code"], record["error_message"]) == (
            "720701013",
            "video unavailable",
        )
    # cozepy 0.20's model requires is_output_trimmed: it cannot read Coze's documented reply.
    with pytest.raises(pydantic.ValidationError, match="is_output_trimmed"):
        await history(coze, run.execute_id)


@pytest.mark.asyncio
@pytest.mark.parametrize("shape", ["complete", "documented"])
async def test_trimmed_output(make_fake, receiver, clients, shape):
    fake = await make_fake(history_shape=shape)
    text = "第一段 " * 50
    fake.outcome_for = lambda url: WorkflowOutcome(text=text, trim_output_at=60)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    whole = json.dumps(
        {"Output": json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":"))},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    (record,) = (await raw_history(fake, run.execute_id)).json()["data"]
    assert record["is_output_trimmed"] is True
    assert record["output"] == whole[:60]  # cut in the middle: no longer JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(record["output"])
    if shape == "complete":
        hist = await history(coze, run.execute_id)
        assert hist.is_output_trimmed is True and hist.output == whole[:60]
    assert [b["text"] for b in receiver.bodies] == [text]  # the callback brings all of it


@pytest.mark.asyncio
async def test_trimmed_output_only_once_the_run_succeeded(make_fake, receiver, clients):
    fake = await make_fake()
    fake.outcome_for = lambda url: WorkflowOutcome(text="x" * 100, trim_output_at=0, duration=0.3)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.RUNNING
    assert hist.is_output_trimmed is False and hist.output == '{"Output":"null"}'
    await fake.drain()
    hist = await history(coze, run.execute_id)
    assert hist.is_output_trimmed is True and hist.output == ""


@pytest.mark.asyncio
async def test_history_edit_hook(make_fake, receiver, clients):
    fake = await make_fake(history_shape="documented")
    seen: list[dict[str, Any]] = []

    def edit(record: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(record))
        return {**record, "output": None, "error_message": None, "bot_id": None}

    fake.history_edit = edit
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    (record,) = (await raw_history(fake, run.execute_id)).json()["data"]
    assert record["output"] is None and record["error_message"] is None
    assert record["bot_id"] is None and record["execute_id"] == run.execute_id
    assert len(seen) == 1 and set(seen[0]) == DOCUMENTED_RECORD_FIELDS


# ---- errors on start -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrong_token_is_4100(fake, receiver, clients):
    coze = clients(fake.base_url, token="pat_wrong")
    with pytest.raises(CozeAPIError) as err:
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
        )
    assert err.value.code == 4100
    assert err.value.logid
    with pytest.raises(CozeAPIError) as err:
        await history(coze, "7400000000000000000")
    assert err.value.code == 4100
    assert fake.runs == {}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"workflow_id": "7400000000000000999"}, 4200),
        ({"bot_id": "1", "app_id": "2"}, 4000),
        ({"is_async": False}, 4000),
        ({"drop": "callback_token"}, 4000),
        ({"drop": "callback_url"}, 4000),
        ({"drop": "task_id"}, 4000),
        ({"drop": "url"}, 4000),
    ],
)
async def test_bad_start_requests(fake, receiver, clients, change, code):
    coze = clients(fake.base_url)
    kwargs: dict[str, Any] = {
        "workflow_id": WORKFLOW_ID,
        "parameters": params(receiver.url),
        "is_async": True,
    }
    if "drop" in change:
        del kwargs["parameters"][change["drop"]]
    else:
        kwargs.update(change)
    with pytest.raises(CozeAPIError) as err:
        await coze.workflows.runs.create(**kwargs)
    assert err.value.code == code
    if change.get("is_async") is False:
        assert "async" in err.value.msg
    assert fake.runs == {}


@pytest.mark.asyncio
async def test_fail_next_start_6003_then_recovers(fake, receiver, clients):
    coze = clients(fake.base_url)
    fake.fail_next_start(6003, "async run requires a paid plan")
    with pytest.raises(CozeAPIError) as err:
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
        )
    assert err.value.code == 6003
    assert err.value.msg == "async run requires a paid plan"
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    assert run.execute_id in fake.runs and len(fake.runs) == 1


@pytest.mark.asyncio
async def test_http_502_non_json_is_coze_api_error_502(fake, receiver, clients):
    coze = clients(fake.base_url)
    fake.fail_next_start(0, "Bad Gateway", http_status=502, count=2)
    fake.fail_next_start(0, "Too Many Requests", http_status=429)
    for status in (502, 502, 429):
        with pytest.raises(CozeAPIError) as err:
            await coze.workflows.runs.create(
                workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
            )
        assert err.value.code == status
        if status == 502:
            assert "<html>" in err.value.msg
    await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    assert len(fake.runs) == 1


@pytest.mark.asyncio
async def test_http_429_with_json_code(fake, receiver, clients):
    coze = clients(fake.base_url)
    fake.fail_next_start(4020, "rate limit exceeded", http_status=429)
    with pytest.raises(CozeAPIError) as err:
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
        )
    assert err.value.code == 4020


@pytest.mark.asyncio
async def test_dropped_connection_is_an_httpx_error(fake, receiver, clients):
    coze = clients(fake.base_url)
    # A first, successful call leaves a keep-alive connection in the pool: the drop still shows.
    await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url, task="a"), is_async=True
    )
    fake.drop_next_start_connection()
    with pytest.raises(httpx.RemoteProtocolError):
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url, task="b"), is_async=True
        )
    assert fake.runs_for_task("b") == []
    await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url, task="c"), is_async=True
    )
    assert len(fake.runs_for_task("c")) == 1
    assert fake.start_calls == 3


@pytest.mark.asyncio
async def test_start_fault_hook(fake, receiver, clients):
    seen: list[dict[str, Any]] = []
    faults = {
        "busy": CozeFault(4009, "system busy"),
        "gateway": CozeFault(0, "Bad Gateway", http_status=502),
        "drop": CozeFault(0, "", drop_connection=True),
    }

    def hook(parameters: dict[str, Any]) -> CozeFault | None:
        seen.append(parameters)
        return faults.get(parameters["task_id"])

    fake.start_fault = hook
    coze = clients(fake.base_url)

    async def start(task: str) -> str:
        run = await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url, task=task), is_async=True
        )
        return str(run.execute_id)

    with pytest.raises(CozeAPIError) as err:
        await start("busy")
    assert (err.value.code, err.value.msg) == (4009, "system busy")
    with pytest.raises(CozeAPIError) as err:
        await start("gateway")
    assert err.value.code == 502
    with pytest.raises(httpx.RemoteProtocolError):
        await start("drop")
    fake.fail_next_start(4020, "rate limit exceeded")  # a queued fault wins: no hook call
    with pytest.raises(CozeAPIError) as err:
        await start("queued")
    assert err.value.code == 4020
    execute_id = await start("ok")
    assert list(fake.runs) == [execute_id]
    assert [p["task_id"] for p in seen] == ["busy", "gateway", "drop", "ok"]
    assert seen[0] == params(receiver.url, task="busy")
    assert fake.injected_start_faults == 3
    assert fake.start_calls == 5


@pytest.mark.asyncio
async def test_history_fault_hook(make_fake, receiver, clients):
    fake = await make_fake(callbacks_enabled=False)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    faults = [
        CozeFault(5000, "internal error", http_status=500),
        CozeFault(0, "", drop_connection=True),
    ]
    seen: list[str] = []

    def hook(execute_id: str) -> CozeFault | None:
        seen.append(execute_id)
        return faults.pop(0) if faults else None

    fake.history_fault = hook
    with pytest.raises(CozeAPIError) as err:
        await history(coze, run.execute_id)
    assert err.value.code == 5000
    with pytest.raises(httpx.RemoteProtocolError):
        await history(coze, run.execute_id)
    fake.fail_next_history(4009, "system busy")  # a queued fault wins: no hook call
    with pytest.raises(CozeAPIError):
        await history(coze, run.execute_id)
    hist = await history(coze, run.execute_id)
    assert hist.execute_id == run.execute_id
    assert seen == [run.execute_id] * 3
    assert fake.injected_history_faults == 2
    assert fake.history_calls == 4


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        (TOKEN_INVALID, 700012006, 401),
        (ACCOUNT_IN_ARREARS, 4019, 200),
        (MODEL_SERVICE_IN_ARREARS, 4022, 200),
        (RISK_CONTROL, 4102, 200),
    ],
    ids=["700012006", "4019", "4022", "4102"],
)
async def test_ready_made_refusals_on_start_and_history(
    make_fake, receiver, clients, fault, code, status
):
    fake = await make_fake(callbacks_enabled=False)
    coze = clients(fake.base_url)
    fake.fail_next_start_with(fault)
    with pytest.raises(CozeAPIError) as err:
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
        )
    assert (err.value.code, err.value.msg) == (code, fault.msg)
    assert err.value.logid
    assert fake.runs == {}
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )

    fake.fail_next_history_with(fault, count=2)
    with pytest.raises(CozeAPIError) as err:
        await history(coze, run.execute_id)
    assert err.value.code == code
    reply = await raw_history(fake, run.execute_id)  # the second one, as it is on the wire
    assert reply.status_code == status
    logid = reply.headers["X-Tt-Logid"]
    assert logid and reply.json() == {"code": code, "msg": fault.msg, "detail": {"logid": logid}}
    assert (await history(coze, run.execute_id)).execute_id == run.execute_id
    assert fake.start_calls == 2 and fake.history_calls == 3


@pytest.mark.asyncio
async def test_a_fault_with_its_own_body(fake, receiver, clients):
    body = {"code": 700012006, "message": "access token invalid"}  # no "msg"
    fake.fail_next_start_with(CozeFault(700012006, "no msg", http_status=401, body=body))
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            f"{fake.base_url}/v1/workflow/run",
            json={"workflow_id": WORKFLOW_ID, "parameters": params(receiver.url)},
        )
    assert reply.status_code == 401 and reply.json() == body
    assert reply.headers["X-Tt-Logid"]
    assert fake.runs == {}


# ---- the HTTP callback node ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_callback_retried_after_500(fake, receiver, clients):
    receiver.answers = [500]
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert fake.runs[run.execute_id].callback_replies == [500, 200]
    assert len(receiver.bodies) == 2 and receiver.bodies[0] == receiver.bodies[1]


@pytest.mark.asyncio
async def test_callback_gives_up_after_three_retries(make_fake, receiver, clients):
    fake = await make_fake(callback_backoff=0.005)
    receiver.answers = [503, 503, 503, 503, 503]
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert fake.runs[run.execute_id].callback_replies == [503, 503, 503, 503]
    assert fake.runs[run.execute_id].status == "Success"  # the run itself still succeeded


@pytest.mark.asyncio
async def test_callback_connection_error_recorded_as_zero(make_fake, clients):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhook/coze"
    fake = await make_fake(callback_backoff=0.005, callback_retries=2)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(dead_url), is_async=True
    )
    await fake.drain()
    assert fake.runs[run.execute_id].callback_replies == [0, 0, 0]


@pytest.mark.asyncio
async def test_callback_timeout_recorded_as_zero(make_fake, receiver, clients):
    fake = await make_fake(callback_timeout=0.1, callback_retries=0)
    receiver.delay = 0.4
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert fake.runs[run.execute_id].callback_replies == [0]
    assert len(receiver.bodies) == 1


@pytest.mark.asyncio
async def test_callback_duplicates(make_fake, receiver, clients):
    fake = await make_fake(callback_duplicates=1)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert [b["status"] for b in receiver.bodies] == ["success", "success"]
    assert receiver.bodies[0] == receiver.bodies[1]
    assert fake.runs[run.execute_id].callback_replies == [200, 200]


@pytest.mark.asyncio
async def test_progress_callback_comes_first(make_fake, receiver, clients):
    fake = await make_fake(send_progress=True)
    coze = clients(fake.base_url)
    await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert [(b["status"], b["progress"]) for b in receiver.bodies] == [
        ("processing", 50),
        ("success", 100),
    ]
    assert receiver.bodies[0]["task_id"] == "t-1" and receiver.bodies[0]["token"] == "tok-t-1"


@pytest.mark.asyncio
async def test_callbacks_disabled_history_still_succeeds(make_fake, receiver, clients):
    fake = await make_fake(callbacks_enabled=False)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.SUCCESS
    assert parse_output(hist.output)["text"] == default_outcome_for(params("")["url"]).text
    assert receiver.bodies == []
    assert fake.runs[run.execute_id].callback_replies == []


@pytest.mark.asyncio
async def test_outcome_callback_lose(make_fake, receiver, clients):
    fake = await make_fake(send_progress=True, callback_duplicates=2)
    fake.outcome_for = lambda url: WorkflowOutcome(text="lost", callback="lose")
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    await fake.drain()
    assert fake.runs[run.execute_id].finished
    hist = await history(coze, run.execute_id)
    assert hist.execute_status == WorkflowExecuteStatus.SUCCESS
    assert parse_output(hist.output) == {"text": "lost"}
    assert receiver.bodies == []  # neither the progress nor the final callback
    assert fake.runs[run.execute_id].callback_replies == []


@pytest.mark.asyncio
async def test_outcome_callback_delay_sends_a_late_callback(fake, receiver, clients):
    fake.outcome_for = lambda url: WorkflowOutcome(text="late", duration=0.02, callback_delay=0.3)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID, parameters=params(receiver.url), is_async=True
    )
    stored = fake.runs[run.execute_id]
    await fake.wait_for(lambda: stored.status == "Success", timeout=2)
    await asyncio.sleep(0.15)
    assert receiver.bodies == []  # the run is over in history, the callback is not here yet
    assert (await history(coze, run.execute_id)).execute_status == WorkflowExecuteStatus.SUCCESS
    await fake.drain()
    assert [(b["status"], b["text"]) for b in receiver.bodies] == [("success", "late")]
    assert stored.callback_replies == [200]


@pytest.mark.asyncio
async def test_outcome_duplicates_override(make_fake, receiver, clients):
    fake = await make_fake(callback_duplicates=1)
    per_url = {"https://x.test/none": 0, "https://x.test/three": 2}
    fake.outcome_for = lambda url: WorkflowOutcome(text=url, duplicates=per_url.get(url))
    coze = clients(fake.base_url)
    for task, link in [("a", "https://x.test/none"), ("b", "https://x.test/three"), ("c", "x")]:
        await coze.workflows.runs.create(
            workflow_id=WORKFLOW_ID, parameters=params(receiver.url, link, task), is_async=True
        )
    await fake.drain()
    counts = {task: len(fake.runs_for_task(task)[0].callback_replies) for task in "abc"}
    assert counts == {"a": 1, "b": 3, "c": 2}  # c: None falls back to callback_duplicates=1
    assert sorted(b["task_id"] for b in receiver.bodies) == ["a", "b", "b", "b", "c", "c"]


@pytest.mark.asyncio
async def test_stop_cancels_running_runs(receiver, clients):
    fake = FakeCoze()
    await fake.start(port=0)
    coze = clients(fake.base_url)
    run = await coze.workflows.runs.create(
        workflow_id=WORKFLOW_ID,
        parameters=params(receiver.url, link="https://v.douyin.com/slow/"),
        is_async=True,
    )
    assert fake.runs[run.execute_id].outcome.duration == 2.0
    await fake.stop()
    await asyncio.sleep(0.05)
    assert fake.runs[run.execute_id].status == "Running"
    assert receiver.bodies == []


# ---- default outcomes ------------------------------------------------------------------------


def test_default_outcomes():
    short = default_outcome_for("https://v.douyin.com/abc/")
    assert short.status == "Success" and "https://v.douyin.com/abc/" in short.text
    assert short == default_outcome_for("https://v.douyin.com/abc/")  # deterministic
    assert short.text != default_outcome_for("https://v.douyin.com/abd/").text

    fail = default_outcome_for("https://x.test/fail")
    assert (fail.status, fail.error_code, fail.error_message) == (
        "Fail",
        720701013,
        "video unavailable",
    )

    long = default_outcome_for("https://x.test/long").text
    assert 12_000 <= len(long) <= 13_000
    assert long.count("\n\n") >= 20
    assert any(ord(c) > 0xFFFF for c in long)  # non-BMP (emoji)
    assert any("\u4e00" <= c <= "\u9fff" for c in long)  # Chinese

    huge = default_outcome_for("https://x.test/huge").text
    assert 60_000 <= len(huge) <= 61_000

    empty = default_outcome_for("https://x.test/empty")
    assert empty.status == "Success" and empty.text == ""

    assert default_outcome_for("https://x.test/slow").duration == 2.0
    assert default_outcome_for("https://x.test/a").duration == 0.05

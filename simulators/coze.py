"""A faithful local fake of the Coze Open API's two workflow endpoints, plus the workflow itself.

Served endpoints (shapes per shared/docs/coze-api.md, checked against cozepy 0.20.0):

- ``POST /v1/workflow/run`` starts an *async* run and answers
  ``{"code":0,"msg":"","execute_id":...,"debug_url":...}``.
- ``GET /v1/workflows/{workflow_id}/run_histories/{execute_id}`` answers
  ``{"code":0,"msg":"","detail":{"logid":...},"data":[RECORD]}``.

Errors are ``{"code":N,"msg":"..."}`` (cozepy raises ``CozeAPIError(N)``); every reply carries
an ``X-Tt-Logid`` header. After a run's ``outcome.duration`` the run becomes Success/Fail and the
workflow's last node, an HTTP request node, POSTs the callback of the architecture's "Callback
contract" to ``parameters["callback_url"]``, retrying like Coze's node does (3 retries by default).

Run history comes in one of two shapes (``history_shape``): every field cozepy 0.20 requires
("complete"), or the fields of the example reply in Coze's docs, which lacks
``is_output_trimmed`` and ``usage`` ("documented").

Fault injection: queued faults (``fail_next_start``, ``drop_next_start_connection``,
``fail_next_history``), random ones through the ``start_fault`` / ``history_fault`` hooks
(a ``CozeFault`` or None per call), ready-made refusals (``TOKEN_INVALID``, ``ACCOUNT_IN_ARREARS``,
``MODEL_SERVICE_IN_ARREARS``, ``RISK_CONTROL``), per-run callback behaviour through
``WorkflowOutcome`` (``callback="lose"``, ``callback_delay``, ``duplicates``), an output cut
short in run history (``WorkflowOutcome.trim_output_at``), and any record edited through the
``history_edit`` hook.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from simulators.base import SimulatorServer

__all__ = [
    "ACCOUNT_IN_ARREARS",
    "FAIL_ERROR_CODE",
    "MODEL_SERVICE_IN_ARREARS",
    "RISK_CONTROL",
    "TOKEN_INVALID",
    "CozeFault",
    "FakeCoze",
    "FakeRun",
    "WorkflowOutcome",
    "default_outcome_for",
]

log = logging.getLogger(__name__)

#: The error code a run of a URL containing "fail" ends with (a plugin error code from Coze).
FAIL_ERROR_CODE = 720701013

_SPACE_ID = "7390000000000000001"
_DEFAULT_CONNECTOR_UID = "2100000000000001"
_COMPACT = (",", ":")  # Coze (Go) writes compact JSON
_RUNNING_OUTPUT = json.dumps({"Output": "null"}, separators=_COMPACT)  # {"Output":"null"}
_REQUIRED_PARAMETERS = ("task_id",)
# A workflow that ends with the HTTP node calling the bot gets these too; without them (the
# bot's poll mode) the node is left out and the run calls nobody.
_CALLBACK_PARAMETERS = ("callback_url", "callback_token")


@dataclass
class WorkflowOutcome:
    """What the workflow will produce for one run."""

    status: Literal["Success", "Fail"] = "Success"
    text: str = ""  # extracted text on success
    error_code: int = 0  # Coze's error_code on Fail (e.g. 720701013)
    error_message: str = ""  # on Fail
    duration: float = 0.05  # seconds the run takes before it completes
    # The workflow's HTTP request node for this run: "send" POSTs the callbacks as configured,
    # "lose" never reaches us (no progress, no final callback; run history is unaffected).
    callback: Literal["send", "lose"] = "send"
    # Seconds between the run completing (history shows Success/Fail) and the final callback.
    callback_delay: float = 0.0
    # Extra copies of the final callback for this run; None = FakeCoze.callback_duplicates.
    duplicates: int | None = None
    # Run history shows `is_output_trimmed: true` and the serialized `output` cut after this
    # many characters (None: whole). Coze cuts an output past 1 MB; how is not documented: cut
    # like this it is JSON that stops in the middle (0: an empty output). The callback still
    # brings the whole text.
    trim_output_at: int | None = None


@dataclass
class FakeRun:
    """One workflow run, as the fake sees it."""

    execute_id: str
    workflow_id: str
    parameters: dict[str, Any]
    outcome: WorkflowOutcome
    status: Literal["Running", "Success", "Fail"]
    created_at: float
    # HTTP status our server answered to each callback POST, in order (progress, retries and
    # duplicates included); 0 = connection error or timeout.
    callback_replies: list[int] = field(default_factory=list)
    # Extras (not part of the agreed surface, but handy when debugging a test):
    updated_at: float = 0.0
    logid: str = ""
    connector_uid: str = _DEFAULT_CONNECTOR_UID
    callbacks_sent: list[dict[str, Any]] = field(default_factory=list)  # bodies, as POSTed
    finished: bool = False  # the run completed and all its callbacks were attempted


@dataclass(frozen=True)
class CozeFault:
    """An error answered instead of a start or run_histories call (no run is created).

    `code > 0`: the JSON body `{"code":code,"msg":msg}` with `http_status`; `code <= 0`: a
    non-JSON body (an HTML page for 5xx, plain text otherwise), which cozepy turns into
    `CozeAPIError(code=http_status)`. `body`: this JSON body as it is, with `http_status`
    (`code` and `msg` are then only labels), for error shapes other than `{"code","msg"}`.
    `drop_connection=True`: the connection is closed without any reply (the other fields are
    ignored), which httpx raises as `RemoteProtocolError`.
    """

    code: int
    msg: str
    http_status: int = 200
    drop_connection: bool = False
    body: dict[str, Any] | None = None


# Refusals the bot must tell apart (codes per shared/docs/coze-api.md). The docs give neither
# the HTTP status nor the message of these; cozepy raises CozeAPIError(code) whatever the status.
# Assumed: an invalid token is refused like other authentication errors, with HTTP 401 and the
# usual {"code","msg"} body; the others come with HTTP 200, as Coze's business errors do.
TOKEN_INVALID = CozeFault(700012006, "access token invalid", http_status=401)
ACCOUNT_IN_ARREARS = CozeFault(4019, "account balance is in arrears, please top up")
MODEL_SERVICE_IN_ARREARS = CozeFault(4022, "model service is in arrears, please top up")
RISK_CONTROL = CozeFault(4102, "request blocked by risk control, please try again later")


# --------------------------------------------------------------------------------------------
# Default outcomes: a deterministic transcript derived from the URL.
# --------------------------------------------------------------------------------------------

_ZH_SENTENCES = (
    "大家好，欢迎来到今天的视频。",
    "今天我们来聊一聊如何在家做一道简单的番茄炒蛋。",
    "首先把鸡蛋打散，加入少许盐。",
    "这个方法我已经用了很多年，效果一直很好。",
    "如果你喜欢这个视频，记得点赞和关注。",
    "接下来我们看一下具体的操作步骤。",
    "很多朋友在评论区问我这个问题，今天统一回答一下。",
    "注意火候不要太大，否则很容易糊锅。",
    "最后撒上葱花，一道美味的家常菜就完成了。",
    "我们下期再见，拜拜！",
)
_EN_SENTENCES = (
    "Hi everyone, welcome back to the channel.",
    "Today we are looking at a question many of you asked in the comments.",
    "The first step is simpler than it looks.",
    "Keep an eye on the timing, it matters more than the ingredients.",
    "Here is the trick that saved me a lot of trouble.",
    "Let me show you the result before we go through the details.",
    "If this helped, please like and subscribe.",
    "That's all for today, see you in the next one.",
)
_EMOJI = ("🎬", "😀", "🚀", "👍", "🍅")  # all outside the BMP (two UTF-16 code units each)


def _rng_for(url: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(url.encode()).digest()[:8], "big"))


def _short_transcript(url: str) -> str:
    rng = _rng_for(url)
    zh = rng.sample(_ZH_SENTENCES, 3)
    en = rng.sample(_EN_SENTENCES, 2)
    return f"视频链接：{url}\n\n{''.join(zh)}\n\n{' '.join(en)} (source: {url})"


def _long_transcript(url: str, target: int) -> str:
    """Paragraphs (Chinese, English, an emoji now and then) until about `target` characters."""
    rng = _rng_for(url)
    paragraphs = [f"视频链接：{url}"]
    total = len(paragraphs[0])
    number = 0
    while total < target:
        number += 1
        if number % 3 == 0:
            body = " ".join(rng.choice(_EN_SENTENCES) for _ in range(rng.randint(4, 9)))
            para = f"Part {number}. {body}"
        else:
            body = "".join(rng.choice(_ZH_SENTENCES) for _ in range(rng.randint(5, 14)))
            para = f"第{number}段：{body}"
        if number % 7 == 1:
            para += " " + rng.choice(_EMOJI)
        paragraphs.append(para)
        total += len(para) + 2
    return "\n\n".join(paragraphs)


def default_outcome_for(url: str) -> WorkflowOutcome:
    """The default outcome of a run for the link `url` (case-sensitive markers).

    - contains "fail": Fail, error_code 720701013, error_message "video unavailable";
    - contains "empty": Success with "";
    - contains "huge": Success, about 60,000 characters in many paragraphs;
    - contains "long": Success, about 12,000 characters in many paragraphs (Chinese, English,
      a few non-BMP emoji);
    - otherwise a short Chinese and English transcript that mentions the link;
    - contains "slow" (combinable with the above): the run takes 2 s instead of 0.05 s;
    - contains "lost" (combinable): the workflow's HTTP node never calls back (only the run
      history tells the outcome).
    """
    duration = 2.0 if "slow" in url else 0.05
    callback: Literal["send", "lose"] = "lose" if "lost" in url else "send"
    if "fail" in url:
        return WorkflowOutcome(
            status="Fail",
            error_code=FAIL_ERROR_CODE,
            error_message="video unavailable",
            duration=duration,
            callback=callback,
        )
    if "empty" in url:
        text = ""
    elif "huge" in url:
        text = _long_transcript(url, 60_000)
    elif "long" in url:
        text = _long_transcript(url, 12_000)
    else:
        text = _short_transcript(url)
    return WorkflowOutcome(status="Success", text=text, duration=duration, callback=callback)


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeCoze(SimulatorServer):
    """Fake Coze: `POST /v1/workflow/run` (async only) and the run_histories endpoint."""

    def __init__(
        self,
        *,
        token: str = "pat_test_token",
        workflow_id: str = "7400000000000000001",
        url_parameter: str = "url",
        output_mode: Literal["variables", "text"] = "variables",
        callback_duplicates: int = 0,
        send_progress: bool = False,
        callbacks_enabled: bool = True,
        seed: int = 0,
        callback_timeout: float = 10.0,
        callback_retries: int = 3,
        callback_backoff: float = 0.05,
        history_shape: Literal["complete", "documented"] = "complete",
    ) -> None:
        super().__init__()
        self.token = token
        self.workflow_id = workflow_id
        self.url_parameter = url_parameter
        self.output_mode: Literal["variables", "text"] = output_mode
        # "complete": every field cozepy 0.20's WorkflowRunHistory requires; "documented": the
        # fields of the example reply in Coze's run-history docs (no is_output_trimmed unless
        # the output was trimmed, no usage; cost and token as strings).
        self.history_shape: Literal["complete", "documented"] = history_shape
        self.callback_duplicates = callback_duplicates
        self.send_progress = send_progress
        self.callbacks_enabled = callbacks_enabled
        self.callback_timeout = callback_timeout  # per attempt (Coze's node: 120 s)
        self.callback_retries = callback_retries  # retries after the first attempt (Coze: 3)
        self.callback_backoff = callback_backoff  # first pause between attempts, doubling
        self.runs: dict[str, FakeRun] = {}
        self.outcome_for: Callable[[str], WorkflowOutcome] = default_outcome_for
        self.history_calls = 0
        self.start_calls = 0  # every POST /v1/workflow/run received, faults included
        self._rng = random.Random(seed)
        # Random faults: called for every start (with the run request's `parameters`) or
        # run_histories call (with the execute_id) that has no queued fault; a CozeFault
        # returned is answered instead of the call, None lets the call through.
        self.start_fault: Callable[[dict[str, Any]], CozeFault | None] | None = None
        self.history_fault: Callable[[str], CozeFault | None] | None = None
        # Called with every run-history record (a fresh dict, in `history_shape`) just before
        # it is answered; what it returns is answered instead (fields left out, nulls, ...).
        self.history_edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.injected_start_faults = 0  # faults returned by `start_fault`
        self.injected_history_faults = 0  # faults returned by `history_fault`
        self._start_faults: deque[CozeFault] = deque()
        self._history_faults: deque[CozeFault] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/workflow/run", self._handle_run)
        app.router.add_get(
            "/v1/workflows/{workflow_id}/run_histories/{execute_id}", self._handle_history
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # A new connection per callback, as a cloud HTTP node would; also avoids stale
        # keep-alive connections when a test restarts the receiver.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        await super().start(host, port)

    async def stop(self) -> None:
        await super().stop()  # no new requests from here on
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("fake Coze run task failed", exc_info=result)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def base_url(self) -> str:
        """What `AsyncCoze(base_url=...)` takes: http://127.0.0.1:PORT."""
        return self.url

    async def drain(self) -> None:
        """Wait until every scheduled run has finished and its callbacks were sent."""
        while True:
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                return
            await asyncio.gather(*pending)

    # ---- test controls ------------------------------------------------------------------

    def runs_for_task(self, task_id: str) -> list[FakeRun]:
        """Runs whose parameters["task_id"] == task_id, oldest first."""
        return [run for run in self.runs.values() if run.parameters.get("task_id") == task_id]

    def fail_next_start(
        self, code: int, msg: str, *, http_status: int = 200, count: int = 1
    ) -> None:
        """The next `count` start calls answer `{"code":code,"msg":msg}` with `http_status`.

        With `code <= 0` the body is not JSON (an HTML page for 5xx, plain text otherwise), which
        cozepy turns into `CozeAPIError(code=http_status)`.
        """
        self.fail_next_start_with(CozeFault(code, msg, http_status), count=count)

    def drop_next_start_connection(self, count: int = 1) -> None:
        """The next `count` start calls get their connection closed without any reply."""
        self.fail_next_start_with(CozeFault(0, "", drop_connection=True), count=count)

    def fail_next_history(
        self, code: int, msg: str, *, http_status: int = 200, count: int = 1
    ) -> None:
        """Like `fail_next_start`, for the run_histories endpoint."""
        self.fail_next_history_with(CozeFault(code, msg, http_status), count=count)

    def fail_next_start_with(self, fault: CozeFault, *, count: int = 1) -> None:
        """The next `count` start calls answer `fault` (e.g. `TOKEN_INVALID`)."""
        self._start_faults.extend([fault] * count)

    def fail_next_history_with(self, fault: CozeFault, *, count: int = 1) -> None:
        """The next `count` run_histories calls answer `fault`."""
        self._history_faults.extend([fault] * count)

    # ---- helpers ------------------------------------------------------------------------

    def _new_logid(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"{stamp}{self._rng.getrandbits(80):020X}"

    def _new_execute_id(self) -> str:
        while True:
            execute_id = str(7_400_000_000_000_000_000 + self._rng.randrange(10**17))
            if execute_id not in self.runs:
                return execute_id

    def _debug_url(self, execute_id: str) -> str:
        return (
            f"https://www.coze.cn/work_flow?execute_id={execute_id}"
            f"&space_id={_SPACE_ID}&workflow_id={self.workflow_id}&execute_mode=2"
        )

    @staticmethod
    def _json(body: dict[str, Any], logid: str, status: int = 200) -> web.Response:
        return web.Response(
            status=status,
            text=json.dumps(body, ensure_ascii=False),
            content_type="application/json",
            headers={"X-Tt-Logid": logid},
        )

    def _error(self, code: int, msg: str, logid: str, status: int = 200) -> web.Response:
        return self._json({"code": code, "msg": msg, "detail": {"logid": logid}}, logid, status)

    @staticmethod
    async def _request_parameters(request: web.Request) -> dict[str, Any]:
        """The body's `parameters` object (a copy), or {} when there is none."""
        try:
            body = await request.json()  # aiohttp caches the body: the handler reads it again
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        parameters = body.get("parameters") if isinstance(body, dict) else None
        return dict(parameters) if isinstance(parameters, dict) else {}

    def _injected(self, fault: CozeFault, logid: str, request: web.Request) -> web.Response:
        if fault.drop_connection:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        if fault.body is not None:
            return self._json(fault.body, logid, fault.http_status)
        if fault.code > 0:
            return self._error(fault.code, fault.msg, logid, fault.http_status)
        headers = {"X-Tt-Logid": logid}
        if fault.http_status >= 500:
            title = f"{fault.http_status} {fault.msg or 'Bad Gateway'}"
            page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
            return web.Response(
                status=fault.http_status, text=page, content_type="text/html", headers=headers
            )
        return web.Response(
            status=fault.http_status,
            text=fault.msg or "error",
            content_type="text/plain",
            headers=headers,
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.token}"

    def _unauthorized(self, logid: str) -> web.Response:
        msg = "authentication is invalid: the access token is missing, wrong or expired"
        return self._error(4100, msg, logid, 401)

    # ---- POST /v1/workflow/run ------------------------------------------------------------

    async def _handle_run(self, request: web.Request) -> web.StreamResponse:
        self.start_calls += 1
        logid = self._new_logid()
        fault: CozeFault | None = None
        if self._start_faults:
            fault = self._start_faults.popleft()
        elif self.start_fault is not None:
            fault = self.start_fault(await self._request_parameters(request))
            if fault is not None:
                self.injected_start_faults += 1
        if fault is not None:
            await self.notify()
            return self._injected(fault, logid, request)
        if not self._authorized(request):
            return self._unauthorized(logid)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(4000, "invalid request body: not JSON", logid)
        if not isinstance(body, dict):
            return self._error(4000, "invalid request body: not a JSON object", logid)
        rejection = self._validate_run(body)
        if rejection is not None:
            code, msg = rejection
            return self._error(code, msg, logid)

        parameters: dict[str, Any] = dict(body["parameters"])
        ext = body.get("ext")
        user_id = ext.get("user_id") if isinstance(ext, dict) else None
        execute_id = self._new_execute_id()
        now = time.time()
        run = FakeRun(
            execute_id=execute_id,
            workflow_id=self.workflow_id,
            parameters=parameters,
            outcome=self.outcome_for(parameters[self.url_parameter]),
            status="Running",
            created_at=now,
            updated_at=now,
            logid=logid,
            connector_uid=str(user_id) if user_id else _DEFAULT_CONNECTOR_UID,
        )
        self.runs[execute_id] = run
        task = asyncio.create_task(self._execute(run), name=f"fake-coze-run-{execute_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self.notify()
        reply = {
            "code": 0,
            "msg": "",
            "execute_id": execute_id,
            "debug_url": self._debug_url(execute_id),
            "detail": {"logid": logid},
        }
        return self._json(reply, logid)

    def _validate_run(self, body: dict[str, Any]) -> tuple[int, str] | None:
        workflow_id = body.get("workflow_id")
        if not isinstance(workflow_id, str) or not workflow_id:
            return 4000, "invalid parameter: workflow_id is required"
        if workflow_id != self.workflow_id:
            return 4200, f"workflow not found or not published: {workflow_id}"
        if body.get("bot_id") and body.get("app_id"):
            return 4000, "invalid parameter: bot_id and app_id cannot both be set"
        if body.get("is_async") is not True:
            return 4000, (
                "invalid parameter: this fake Coze only supports is_async=true "
                "(the bot always runs the workflow asynchronously)"
            )
        ext = body.get("ext")
        if ext is not None and not isinstance(ext, dict):
            return 4000, "invalid parameter: ext must be an object"
        parameters = body.get("parameters")
        if not isinstance(parameters, dict):
            return 4000, "invalid parameter: parameters must be an object"
        given = [name for name in _CALLBACK_PARAMETERS if name in parameters]
        needed = (*_REQUIRED_PARAMETERS, *(_CALLBACK_PARAMETERS if given else ()))
        for name in (self.url_parameter, *needed):
            value = parameters.get(name)
            if not isinstance(value, str) or not value:
                return 4000, f"invalid parameter: workflow input {name!r} is required (a string)"
        return None

    # ---- GET /v1/workflows/{workflow_id}/run_histories/{execute_id} -------------------------

    async def _handle_history(self, request: web.Request) -> web.Response:
        self.history_calls += 1
        logid = self._new_logid()
        workflow_id = request.match_info["workflow_id"]
        execute_id = request.match_info["execute_id"]
        fault: CozeFault | None = None
        if self._history_faults:
            fault = self._history_faults.popleft()
        elif self.history_fault is not None:
            fault = self.history_fault(execute_id)
            if fault is not None:
                self.injected_history_faults += 1
        await self.notify()
        if fault is not None:
            return self._injected(fault, logid, request)
        if not self._authorized(request):
            return self._unauthorized(logid)
        if workflow_id != self.workflow_id:
            return self._error(4200, f"workflow not found or not published: {workflow_id}", logid)
        run = self.runs.get(execute_id)
        if run is None or run.workflow_id != workflow_id:
            return self._error(4314, f"execution record not found: execute_id={execute_id}", logid)
        reply = {
            "code": 0,
            "msg": "",
            "detail": {"logid": logid},
            "data": [self._edited(self._history_record(run))],
        }
        return self._json(reply, logid)

    def _edited(self, record: dict[str, Any]) -> dict[str, Any]:
        return record if self.history_edit is None else self.history_edit(record)

    @staticmethod
    def _trimmed(run: FakeRun) -> bool:
        return run.status == "Success" and run.outcome.trim_output_at is not None

    def _output(self, run: FakeRun) -> str:
        output = self._whole_output(run)
        if self._trimmed(run):
            assert run.outcome.trim_output_at is not None
            return output[: run.outcome.trim_output_at]
        return output

    def _whole_output(self, run: FakeRun) -> str:
        if run.status != "Success":
            return _RUNNING_OUTPUT  # also what a failed run shows
        text = run.outcome.text
        if self.output_mode == "text":
            inner = json.dumps(
                {"content_type": 1, "data": text, "original_result": None, "type_for_model": 2},
                ensure_ascii=False,
                separators=_COMPACT,
            )
        else:
            inner = json.dumps({"text": text}, ensure_ascii=False, separators=_COMPACT)
        return json.dumps({"Output": inner}, ensure_ascii=False, separators=_COMPACT)

    def _history_record(self, run: FakeRun) -> dict[str, Any]:
        if self.history_shape == "documented":
            return self._documented_record(run)
        return self._complete_record(run)

    def _documented_record(self, run: FakeRun) -> dict[str, Any]:
        """The fields, order and types of the example in Coze's run-history docs (run_mode 2:
        these runs are async; the example shows a sync one, 0)."""
        failed = run.status == "Fail"
        record: dict[str, Any] = {
            "update_time": int(run.updated_at),
            "cost": "0.00000",
            "output": self._output(run),
            "bot_id": "0",
            "token": "0",
            "execute_status": run.status,
            "connector_uid": run.connector_uid,
            "run_mode": 2,
            "connector_id": "1024",
            "logid": run.logid,
            "debug_url": self._debug_url(run.execute_id),
            "error_code": str(run.outcome.error_code) if failed else "",
            "error_message": run.outcome.error_message if failed else "",
            "execute_id": run.execute_id,
            "create_time": int(run.created_at),
        }
        if self._trimmed(run):
            record["is_output_trimmed"] = True  # the example shows an untrimmed output
        return record

    def _complete_record(self, run: FakeRun) -> dict[str, Any]:
        failed = run.status == "Fail"
        input_count = 20 + len(json.dumps(run.parameters)) // 4
        output_count = len(run.outcome.text) // 2 if run.status == "Success" else 0
        return {
            "execute_id": run.execute_id,
            "execute_status": run.status,
            "output": self._output(run),
            "error_code": str(run.outcome.error_code) if failed else "",
            "error_message": run.outcome.error_message if failed else "",
            "debug_url": self._debug_url(run.execute_id),
            "is_output_trimmed": self._trimmed(run),
            "create_time": int(run.created_at),
            "update_time": int(run.updated_at),
            "bot_id": "0",
            "connector_id": "1024",
            "connector_uid": run.connector_uid,
            "run_mode": 2,
            "logid": run.logid,
            "usage": {
                "input_count": input_count,
                "output_count": output_count,
                "token_count": input_count + output_count,
            },
        }

    # ---- the workflow and its HTTP request node ------------------------------------------

    async def _execute(self, run: FakeRun) -> None:
        loop = asyncio.get_running_loop()
        outcome = run.outcome
        duration = max(0.0, outcome.duration)
        deadline = loop.time() + duration
        # No callback URL among the inputs: the workflow has no HTTP node (the bot polls).
        send = (
            self.callbacks_enabled
            and outcome.callback == "send"
            and "callback_url" in run.parameters
        )
        if send and self.send_progress:
            await asyncio.sleep(duration / 2)
            await self._deliver(run, self._callback_body(run, final=False))
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        run.status = outcome.status
        run.updated_at = time.time()
        await self.notify()
        if send:
            if outcome.callback_delay > 0:
                await asyncio.sleep(outcome.callback_delay)
            body = self._callback_body(run, final=True)
            if await self._deliver(run, body):
                duplicates = outcome.duplicates
                if duplicates is None:
                    duplicates = self.callback_duplicates
                for _ in range(duplicates):
                    await self._post_once(run, body)
        run.finished = True
        await self.notify()

    @staticmethod
    def _callback_body(run: FakeRun, *, final: bool) -> dict[str, Any]:
        params = run.parameters
        if not final:
            status, text, error, progress = "processing", "", "", 50
        elif run.outcome.status == "Success":
            status, text, error, progress = "success", run.outcome.text, "", 100
        else:
            status, text, error, progress = "failed", "", run.outcome.error_message, 100
        return {
            "task_id": params["task_id"],
            "token": params["callback_token"],
            "status": status,
            "text": text,
            "error": error,
            "progress": progress,
        }

    async def _deliver(self, run: FakeRun, body: dict[str, Any]) -> bool:
        """One POST plus up to `callback_retries` retries; True once answered 2xx."""
        pause = self.callback_backoff
        for attempt in range(self.callback_retries + 1):
            if attempt:
                await asyncio.sleep(pause)
                pause *= 2
            if 200 <= await self._post_once(run, body) < 300:
                return True
        return False

    async def _post_once(self, run: FakeRun, body: dict[str, Any]) -> int:
        assert self._session is not None, "FakeCoze not started"
        url = run.parameters["callback_url"]
        data = json.dumps(body, ensure_ascii=False).encode()
        run.callbacks_sent.append(body)
        try:
            async with self._session.post(
                url,
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.callback_timeout),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status = 0
        run.callback_replies.append(status)
        await self.notify()
        return status

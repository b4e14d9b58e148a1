"""A thin layer over cozepy's AsyncCoze: parameters in, outcome out, errors classified."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from cozepy import AsyncCoze, AsyncTokenAuth, CozeAPIError, CozeError, CozePKCEAuthError
from cozepy.exception import CozePKCEAuthErrorType
from cozepy.model import ListResponse
from cozepy.request import AsyncHTTPClient, Requester
from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

# Codes from shared/docs/coze-api.md. Transient ones are worth trying again later; the others
# will not work until the operator changes something (token, plan, workflow, balance).
INVALID_TOKEN_CODE = 700012006  # "access token invalid"
RISK_CONTROL_CODE = 4102  # blocked by risk control, "try again later"
TRANSIENT_CODES = frozenset({4009, 4013, 4020, RISK_CONTROL_CODE, 5000})
CONFIG_CODES = frozenset({4000, 4100, 4101, 4200, INVALID_TOKEN_CODE})
QUOTA_CODES = frozenset({4008, 4011, 4019, 4022})
PLAN_CODES = frozenset({6003})

_TOKEN_HINT = (
    "Coze says the access token is invalid: create a new personal access token (run and "
    "listRunHistory permissions) and put it in coze.token (COZE_API_TOKEN); check "
    "coze.api_base_url too: a token made on coze.com is refused by api.coze.cn, and one made "
    "on coze.cn by api.coze.com"
)

# What the operator has to change when Coze refuses a call for good (logged, never shown to users).
OPERATOR_HINTS = {
    4000: "Coze rejected the run's parameters: check that coze.url_parameter names the "
    "workflow's input parameter",
    4008: "the Coze account reached its daily limit: wait for the reset or raise the plan",
    4011: "the Coze account's balance is too low: top it up",
    4019: "the Coze account is in arrears: top up the balance",
    4022: "the Coze account is in arrears for model service: top up the balance",
    4100: "coze.token (COZE_API_TOKEN) is invalid or expired: create a new personal access token",
    4101: "the Coze token lacks a permission: give it the workflow run and listRunHistory "
    "permissions",
    RISK_CONTROL_CODE: "Coze's risk control blocked the call for now: nothing to change if it "
    "passes; if it lasts, ask Coze support with the logid",
    4200: "the workflow is not found or not published: check coze.workflow_id and publish it",
    6003: "async workflow runs need a paid Coze plan: upgrade the plan",
    INVALID_TOKEN_CODE: _TOKEN_HINT,
}

# How much of Coze's own message (or a non-JSON page) goes into the operator's log line.
_MAX_MESSAGE_CHARS = 300


def callback_token(secret: str, run_id: str) -> str:
    """The token a run's callback must echo: hex(HMAC-SHA256(secret, run_id))."""
    return hmac.new(
        secret.encode(), run_id.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()


class ErrorClass(StrEnum):
    """How a failed Coze call is told to the user (and the operator)."""

    BUSY = "coze_busy"  # transient: try again later
    CONFIG = "coze_config"  # bad token, no permission, unpublished workflow, bad parameters
    QUOTA = "coze_quota"  # daily limit or balance
    PLAN = "coze_plan"  # async runs need a paid plan (6003)
    UNKNOWN = "coze_error"


class CozeCallError(Exception):
    """A Coze call that failed; `kind` says what the user is told, `transient` if worth retrying."""

    def __init__(
        self,
        kind: ErrorClass,
        transient: bool,
        code: int | None,
        detail: str,
        *,
        hint: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.transient = transient
        self.code = code
        # For the operator's log: code, message and logid (never the token).
        self.detail = detail
        self._hint = hint

    @property
    def operator_hint(self) -> str:
        """What the operator should do about this error, in one sentence."""
        if self._hint is not None:
            return self._hint
        if self.code in OPERATOR_HINTS:
            return OPERATOR_HINTS[self.code]
        if self.transient:
            return "Coze is busy or unreachable: nothing to change if it passes"
        return "unexpected Coze error: look it up with the logid"


@dataclass(frozen=True)
class _Said:
    """What a failed call's reply says: Coze's code and message, the logid, the HTTP status."""

    code: int | None = None  # Coze's own code (> 0), None when the reply carries none
    msg: str = ""
    logid: str | None = None
    http_status: int | None = None  # None: unknown (no reply seen)


def classify(exc: BaseException, response: httpx.Response | None = None) -> CozeCallError:
    """What a failed call means: `exc` as cozepy (or httpx) raised it, and `response`, the HTTP
    reply it came with when there was one.

    cozepy raises `CozeAPIError(code)` only for a JSON body with both `code` and `msg`; a
    non-JSON body becomes `CozeAPIError(<HTTP status>)`, a body with `error_message` but no
    `msg` a `CozeAPIError(None)`, and a body it cannot place at all a validation error. The
    reply itself is read too, so Coze's code is found in every one of these shapes.
    """
    if isinstance(exc, httpx.HTTPError):  # no reply: connection refused, dropped, timed out
        return CozeCallError(ErrorClass.BUSY, True, None, f"network fault: {exc!r}")
    if isinstance(exc, CozePKCEAuthError):
        return _pkce_error(exc)
    said = _merge(_said_by_exception(exc), _said_by_reply(response))
    detail = _detail(exc, said)
    code = said.code
    if code in TRANSIENT_CODES:
        return CozeCallError(ErrorClass.BUSY, True, code, detail)
    if code in CONFIG_CODES:
        return CozeCallError(ErrorClass.CONFIG, False, code, detail)
    if code in QUOTA_CODES:
        return CozeCallError(ErrorClass.QUOTA, False, code, detail)
    if code in PLAN_CODES:
        return CozeCallError(ErrorClass.PLAN, False, code, detail)
    status = said.http_status
    if status is not None and (status == 429 or 500 <= status < 600):
        return CozeCallError(ErrorClass.BUSY, True, code, detail)
    return CozeCallError(ErrorClass.UNKNOWN, False, code, detail)


def _is_http_status(code: int) -> bool:
    # cozepy puts the HTTP status in CozeAPIError.code for a non-JSON body. Coze's own codes
    # are never three digits (4000 and up), so the two cannot be confused.
    return 100 <= code <= 599


def _said_by_exception(exc: BaseException) -> _Said:
    if isinstance(exc, CozeAPIError):
        if exc.code is not None and _is_http_status(exc.code):
            return _Said(msg=exc.msg or "", logid=exc.logid, http_status=exc.code)
        code = exc.code if exc.code is not None and exc.code > 0 else None
        return _Said(code=code, msg=exc.msg or "", logid=exc.logid)
    logid = getattr(exc, "logid", None) if isinstance(exc, CozeError) else None
    return _Said(logid=logid if isinstance(logid, str) and logid else None)


def _said_by_reply(response: httpx.Response | None) -> _Said:
    if response is None:
        return _Said()
    logid = response.headers.get("x-tt-logid") or None
    try:
        body = response.json()
    except Exception:  # not JSON, or (never with cozepy) not read
        return _Said(logid=logid, http_status=response.status_code)
    if not isinstance(body, dict):
        return _Said(logid=logid, http_status=response.status_code)
    code = next(
        (c for c in (_as_code(body.get("code")), _as_code(body.get("error_code"))) if c),
        None,
    )
    msg = next((m for m in (body.get(key) for key in ("msg", "message", "error_message")) if m), "")
    detail = body.get("detail")
    if logid is None and isinstance(detail, dict) and isinstance(detail.get("logid"), str):
        logid = detail["logid"] or None
    return _Said(code=code, msg=str(msg), logid=logid, http_status=response.status_code)


def _as_code(value: Any) -> int | None:
    """A positive Coze code from a JSON value (a number, or digits in a string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) or None
    return None


def _merge(by_exception: _Said, by_reply: _Said) -> _Said:
    return _Said(
        code=by_reply.code or by_exception.code,
        msg=by_reply.msg or by_exception.msg,
        logid=by_reply.logid or by_exception.logid,
        http_status=by_reply.http_status or by_exception.http_status,
    )


def _detail(exc: BaseException, said: _Said) -> str:
    status = f" (HTTP {said.http_status})" if said.http_status not in (None, 200) else ""
    message = _short(said.msg)
    said_text = f": {message}" if message else ""
    if said.code is not None:
        what = f"Coze error {said.code}{status}{said_text}"
    elif isinstance(exc, CozeAPIError):
        what = f"Coze answered{status or ' HTTP 200'} without an error code{said_text}"
    else:  # e.g. a reply cozepy could not read (a validation error)
        what = f"unexpected reply{status}{said_text}: {_short(repr(exc))}"
    return f"{what} (logid {said.logid})"


def _short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        return text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _pkce_error(exc: CozePKCEAuthError) -> CozeCallError:
    # OAuth device/PKCE answers; with a personal access token they are not expected, but
    # cozepy raises them for any reply whose `error_code` is one of these words.
    detail = f"Coze auth error {exc.error.value} (logid {exc.logid})"
    if exc.error in (CozePKCEAuthErrorType.AUTHORIZATION_PENDING, CozePKCEAuthErrorType.SLOW_DOWN):
        return CozeCallError(ErrorClass.BUSY, True, None, detail)
    return CozeCallError(ErrorClass.CONFIG, False, None, detail, hint=_TOKEN_HINT)


class RunStatus(StrEnum):
    RUNNING = "Running"
    SUCCESS = "Success"
    FAIL = "Fail"


@dataclass(frozen=True)
class StartedRun:
    execute_id: str
    debug_url: str


@dataclass(frozen=True)
class RunHistory:
    status: RunStatus
    text: str  # the extracted text when status is SUCCESS
    error_code: int
    error_message: str
    # Coze cut the output (it passed 1 MB): `text` is what was left of it.
    output_trimmed: bool = False


def parse_output(output: str) -> str:
    """The text out of a run-history `output`.

    `output` is a JSON string whose `Output` is the end node's output, often JSON again:
    `{"text": ...}` (return variables), `{"content_type":1,"data": ...}` (return text), or text.
    An output Coze cut short (`is_output_trimmed`) is JSON that stops in the middle: the text
    up to the cut is kept.
    """
    outer: Any = _maybe_json(output)
    inner: Any = outer.get("Output", outer) if isinstance(outer, dict) else outer
    inner = _maybe_json(inner)
    return _text_of(inner)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return _cut_json_object(value)
    return value


# The start of a JSON object cut inside its first string value: `{"Output":"...`, or
# `{"content_type":1,"data":"...` (number, true/false/null members may come first).
_CUT_OBJECT = re.compile(
    r'\s*\{(?:\s*"[^"\\]*"\s*:\s*(?:-?\d+(?:\.\d+)?|true|false|null)\s*,)*'
    r'\s*"([^"\\]*)"\s*:\s*"'
)


def _cut_json_object(value: str) -> Any:
    """`{key: <the string value up to the cut>}` for JSON cut inside its first string value;
    `value` itself when it is not that."""
    match = _CUT_OBJECT.match(value)
    if match is None:
        return value
    text = _json_string_prefix(value[match.end() :])
    return value if text is None else {match.group(1): text}


def _json_string_prefix(body: str) -> str | None:
    """The JSON string whose body starts `body`: up to its closing quote, or up to the cut
    (a half escape sequence at the cut is dropped)."""
    index = 0
    while index < len(body):
        if body[index] == "\\":
            index += 2
        elif body[index] == '"':
            break
        else:
            index += 1
    body = body[:index]
    for drop in range(7):  # an escape cut short is at most 5 characters ("\\u123")
        try:
            text = json.loads(f'"{body[: len(body) - drop]}"')
        except ValueError:
            continue
        if isinstance(text, str):
            # A surrogate pair cut in half leaves a lone high surrogate: not text.
            return text[:-1] if text and "\ud800" <= text[-1] <= "\udbff" else text
    return None


def _text_of(value: Any) -> str:
    if value is None or value == "null":
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "data", "output", "content", "result"):
            if key in value:
                return _text_of(_maybe_json(value[key]))
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "\n".join(_text_of(item) for item in value)
    return str(value)


class _RunRecord(BaseModel):
    """One run-history record, as loosely as Coze may send it.

    cozepy 0.20's `WorkflowRunHistory` requires `is_output_trimmed` (and `bot_id`, `usage`'s
    shape, ...), which Coze's own documented example reply lacks: such a reply would never
    settle a task. Only `execute_status` is needed here; everything else may be missing or null.
    """

    model_config = ConfigDict(extra="ignore")

    execute_status: str
    output: str | None = None
    error_code: int | str | None = None
    error_message: str | None = None
    is_output_trimmed: bool | None = None


def _error_code(value: int | str | None) -> int:
    """A record's `error_code` as a number: a string on the wire, "" (or "0") when none."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return 0


_T = TypeVar("_T")

# The HTTP reply of the Coze call under way in this task, kept by the http client's response
# hook, so that a failed call can be classified from what Coze answered (see `classify`).
_reply: contextvars.ContextVar[list[httpx.Response] | None] = contextvars.ContextVar(
    "coze_reply", default=None
)


async def _keep_reply(response: httpx.Response) -> None:
    replies = _reply.get()
    if replies is not None:
        replies.append(response)


class CozeWorkflowClient:
    """Starts async runs of one workflow and reads their history."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        workflow_id: str,
        url_parameter: str,
        callback_url: str,
        callback_secret: str,
        timeout_seconds: float,
    ) -> None:
        self._workflow_id = workflow_id
        self._url_parameter = url_parameter
        self._callback_url = callback_url
        self._callback_secret = callback_secret
        # Our own http client, so its timeouts are ours (cozepy's default read timeout is 600 s)
        # and it can be closed on shutdown.
        self._http = AsyncHTTPClient(  # type: ignore[no-untyped-call]
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            event_hooks={"response": [_keep_reply]},
        )
        auth = AsyncTokenAuth(token)
        self._coze = AsyncCoze(auth=auth, base_url=base_url, http_client=self._http)
        # Run history is read through cozepy's requester (its auth header, http client and
        # error mapping) with a looser record model than cozepy's own (see _RunRecord).
        self._requester = Requester(auth=auth, async_client=self._http)
        self._history_url = (
            f"{base_url.rstrip('/')}/v1/workflows/{quote(workflow_id, safe='')}/run_histories/"
        )

    def parameters(self, link: str, run_id: str) -> dict[str, str]:
        """The workflow's inputs; with no callback URL (poll mode) the workflow gets none."""
        parameters = {self._url_parameter: link, "task_id": run_id}
        if self._callback_url:
            parameters["callback_url"] = self._callback_url
            parameters["callback_token"] = callback_token(self._callback_secret, run_id)
        return parameters

    @staticmethod
    async def _call(call: Callable[[], Awaitable[_T]]) -> _T:
        """Make one Coze call; any failure is raised as a classified CozeCallError."""
        replies: list[httpx.Response] = []
        kept = _reply.set(replies)
        try:
            return await call()
        except Exception as exc:
            raise classify(exc, replies[-1] if replies else None) from exc
        finally:
            _reply.reset(kept)

    async def start(self, link: str, run_id: str) -> StartedRun:
        """Start an async run for `link`; raises CozeCallError."""
        run = await self._call(
            lambda: self._coze.workflows.runs.create(
                workflow_id=self._workflow_id,
                parameters=self.parameters(link, run_id),
                is_async=True,
            )
        )
        if not run.execute_id:
            raise CozeCallError(
                ErrorClass.UNKNOWN, False, None, "Coze accepted the run without an execute_id"
            )
        return StartedRun(execute_id=run.execute_id, debug_url=run.debug_url)

    async def run_history(self, execute_id: str) -> RunHistory:
        """The current state of a run; raises CozeCallError."""
        url = self._history_url + quote(execute_id, safe="")
        reply = await self._call(
            lambda: self._requester.arequest("get", url, False, ListResponse[_RunRecord])
        )
        if len(reply) == 0:
            # Possibly a record not written yet (like 4314): looked at again later.
            raise CozeCallError(
                ErrorClass.UNKNOWN,
                True,
                None,
                f"Coze's run history has no record for {execute_id} (logid {reply.response.logid})",
            )
        record = reply[0]
        try:
            status = RunStatus(record.execute_status)
        except ValueError:
            raise CozeCallError(
                ErrorClass.UNKNOWN,
                False,
                None,
                f"unknown execute_status {_short(record.execute_status)!r} in Coze's run "
                f"history (logid {reply.response.logid})",
            ) from None
        output = record.output or ""
        return RunHistory(
            status=status,
            text=parse_output(output) if status is RunStatus.SUCCESS else "",
            error_code=_error_code(record.error_code),
            error_message=record.error_message or "",
            output_trimmed=bool(record.is_output_trimmed),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

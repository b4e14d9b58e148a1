"""A thin layer over cozepy's AsyncCoze: parameters in, outcome out, errors classified."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from cozepy import AsyncCoze, AsyncTokenAuth, CozeAPIError
from cozepy.request import AsyncHTTPClient

log = logging.getLogger(__name__)

# Codes from shared/docs/coze-api.md. Transient ones are worth trying again later; the others
# will not work until the operator changes something (token, plan, workflow, balance).
TRANSIENT_CODES = frozenset({4009, 4013, 4020, 5000})
CONFIG_CODES = frozenset({4000, 4100, 4101, 4200})
QUOTA_CODES = frozenset({4008, 4011})
PLAN_CODES = frozenset({6003})


# What the operator has to change when Coze refuses a call for good (logged, never shown to users).
OPERATOR_HINTS = {
    4000: "Coze rejected the run's parameters: check that coze.url_parameter names the "
    "workflow's input parameter",
    4008: "the Coze account reached its daily limit: wait for the reset or raise the plan",
    4011: "the Coze account's balance is too low: top it up",
    4100: "coze.token (COZE_API_TOKEN) is invalid or expired: create a new personal access token",
    4101: "the Coze token lacks a permission: give it the workflow run and listRunHistory "
    "permissions",
    4200: "the workflow is not found or not published: check coze.workflow_id and publish it",
    6003: "async workflow runs need a paid Coze plan: upgrade the plan",
}


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

    def __init__(self, kind: ErrorClass, transient: bool, code: int | None, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.transient = transient
        self.code = code
        # For the operator's log: code, message and logid (never the token).
        self.detail = detail

    @property
    def operator_hint(self) -> str:
        """What the operator should do about this error, in one sentence."""
        if self.code in OPERATOR_HINTS:
            return OPERATOR_HINTS[self.code]
        if self.transient:
            return "Coze is busy or unreachable: nothing to change if it passes"
        return "unexpected Coze error: look it up with the logid"


def classify(exc: BaseException) -> CozeCallError:
    if isinstance(exc, CozeAPIError):
        code = exc.code
        detail = f"Coze error {code}: {exc.msg} (logid {exc.logid})"
        if code in TRANSIENT_CODES or code == 429 or (code is not None and 500 <= code < 600):
            return CozeCallError(ErrorClass.BUSY, True, code, detail)
        if code in CONFIG_CODES:
            return CozeCallError(ErrorClass.CONFIG, False, code, detail)
        if code in QUOTA_CODES:
            return CozeCallError(ErrorClass.QUOTA, False, code, detail)
        if code in PLAN_CODES:
            return CozeCallError(ErrorClass.PLAN, False, code, detail)
        return CozeCallError(ErrorClass.UNKNOWN, False, code, detail)
    if isinstance(exc, httpx.HTTPError):
        return CozeCallError(ErrorClass.BUSY, True, None, f"network fault: {exc!r}")
    return CozeCallError(ErrorClass.UNKNOWN, False, None, f"unexpected: {exc!r}")


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


def parse_output(output: str) -> str:
    """The text out of a run-history `output`.

    `output` is a JSON string whose `Output` is the end node's output, often JSON again:
    `{"text": ...}` (return variables), `{"content_type":1,"data": ...}` (return text), or text.
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
            return value
    return value


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
            timeout=httpx.Timeout(timeout_seconds, connect=5.0)
        )
        self._coze = AsyncCoze(
            auth=AsyncTokenAuth(token), base_url=base_url, http_client=self._http
        )

    def parameters(self, link: str, run_id: str) -> dict[str, str]:
        return {
            self._url_parameter: link,
            "task_id": run_id,
            "callback_url": self._callback_url,
            "callback_token": callback_token(self._callback_secret, run_id),
        }

    async def start(self, link: str, run_id: str) -> StartedRun:
        """Start an async run for `link`; raises CozeCallError."""
        try:
            run = await self._coze.workflows.runs.create(
                workflow_id=self._workflow_id,
                parameters=self.parameters(link, run_id),
                is_async=True,
            )
        except Exception as exc:
            raise classify(exc) from exc
        if not run.execute_id:
            raise CozeCallError(
                ErrorClass.UNKNOWN, False, None, "Coze accepted the run without an execute_id"
            )
        return StartedRun(execute_id=run.execute_id, debug_url=run.debug_url)

    async def run_history(self, execute_id: str) -> RunHistory:
        """The current state of a run; raises CozeCallError."""
        try:
            hist = await self._coze.workflows.runs.run_histories.retrieve(
                workflow_id=self._workflow_id, execute_id=execute_id
            )
        except Exception as exc:
            raise classify(exc) from exc
        status = RunStatus(hist.execute_status.value)
        text = parse_output(hist.output) if status is RunStatus.SUCCESS else ""
        return RunHistory(
            status=status,
            text=text,
            error_code=int(hist.error_code or 0),
            error_message=hist.error_message or "",
        )

    async def aclose(self) -> None:
        await self._http.aclose()

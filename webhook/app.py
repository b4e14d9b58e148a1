"""aiohttp application factory: POST /webhook/coze (the workflow's callback) and GET /healthz.

The callback contract (shared/docs/architecture.md): 200 accepted (also duplicates and stale
attempts), 400 malformed, 401 bad token, 404 unknown run, 413 too large. The outcome is stored
before the answer; Telegram is never called inside the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks import CallbackReceipt, CallbackReport, TaskService

log = logging.getLogger(__name__)

TASK_SERVICE = web.AppKey("task_service", TaskService)
HealthCheck = Callable[[], Awaitable[bool]]
HEALTH_CHECK: web.AppKey[HealthCheck] = web.AppKey("health_check")

CALLBACK_PATH = "/webhook/coze"


class _CallbackBody(BaseModel):
    """The JSON the workflow's HTTP node sends; anything else is a 400."""

    model_config = ConfigDict(extra="ignore", strict=True)

    task_id: Annotated[str, Field(min_length=1, max_length=64)]
    token: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["success", "failed", "processing"]
    text: str | None = None
    error: str | None = None
    progress: Annotated[int, Field(ge=0, le=100)] | None = None


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"ok": 200 <= status < 300, "message": message}, status=status)


async def coze_callback(request: web.Request) -> web.Response:
    try:
        # aiohttp stops reading past the app's client_max_size.
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _answer(413, "body too large")
    try:
        body = _CallbackBody.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors too.
        log.info("malformed callback: %s", _one_line(exc))
        return _answer(400, "malformed callback body")
    report = CallbackReport(
        run_id=body.task_id,
        token=body.token,
        status=body.status,
        text=body.text or "",
        error=body.error or "",
        progress=body.progress,
    )
    receipt = await request.app[TASK_SERVICE].handle_callback(report)
    if receipt is CallbackReceipt.BAD_TOKEN:
        log.warning("callback with a bad token for run %r", body.task_id)
        return _answer(401, "bad token")
    if receipt is CallbackReceipt.UNKNOWN_RUN:
        return _answer(404, "unknown run")
    return _answer(200, "accepted")


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def healthz(request: web.Request) -> web.Response:
    healthy = await request.app[HEALTH_CHECK]()
    return web.json_response(
        {"ok": healthy, "database": "ok" if healthy else "unreachable"},
        status=200 if healthy else 503,
    )


def create_app(*, max_callback_bytes: int) -> web.Application:
    """The web app; TASK_SERVICE and HEALTH_CHECK are set by a cleanup context of the caller."""
    app = web.Application(client_max_size=max_callback_bytes)
    app.router.add_post(CALLBACK_PATH, coze_callback)
    app.router.add_get("/healthz", healthz)
    return app

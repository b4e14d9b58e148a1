"""aiohttp application factory: POST /webhook/coze (the workflow's callback), and health
(GET /healthz, GET /readyz: webhook.health).

The callback contract (README, "The callback contract"): 200 accepted (also duplicates and
stale attempts), 400 malformed, 401 bad token, 404 unknown run, 413 too large, 415 a
Content-Type other than JSON or a Content-Encoding other than identity, gzip or deflate. Any
other path is 404 and any other method 405. Every refusal is one short log line in our own
words: never the body, the token or a header's value. The outcome is stored before the answer;
Telegram is never called inside the request.
"""

from __future__ import annotations

import logging

from aiohttp import hdrs, web

from tasks import CallbackReceipt, CallbackReport, TaskService
from tasks.metrics import CONTENT_TYPE, Metrics
from webhook.connections import Handler, track_requests
from webhook.contract import parse_callback
from webhook.health import add_health_routes
from webhook.refusal import Refusal
from webhook.requests import answer, read_checked_body, refuse
from webhook.server import HANDLER_ARGS
from webhook.telegram import TELEGRAM_PATH, telegram_update

log = logging.getLogger(__name__)

TASK_SERVICE = web.AppKey("task_service", TaskService)
METRICS = web.AppKey("metrics", Metrics)
MAX_CALLBACK_BYTES = web.AppKey("max_callback_bytes", int)

CALLBACK_PATH = "/webhook/coze"


async def coze_callback(request: web.Request) -> web.Response:
    response = await _answer_callback(request)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.callback(response.status)
    return response


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus' text format (GET /metrics)."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return refuse(request, Refusal(404, "no such path"))
    body = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _answer_callback(request: web.Request) -> web.Response:
    try:
        report = await _receive(request)
    except Refusal as refusal:
        return refuse(request, refusal)
    receipt = await request.app[TASK_SERVICE].handle_callback(report)
    if receipt is CallbackReceipt.BAD_TOKEN:
        return refuse(request, Refusal(401, "bad token"))
    if receipt is CallbackReceipt.UNKNOWN_RUN:
        return refuse(request, Refusal(404, "unknown run"))
    return answer(200, "accepted")


async def _receive(request: web.Request) -> CallbackReport:
    """The report in the request's body, checked from the headers inward."""
    limit = request.app[MAX_CALLBACK_BYTES]
    return parse_callback(await read_checked_body(request, limit))


_HTTP_ERROR_REASONS = {404: "no such path", 405: "method not allowed"}


@web.middleware
async def answer_in_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx (unknown path, wrong method) as the contract's JSON, logged once."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not 400 <= exc.status < 500:
            raise
        reason = _HTTP_ERROR_REASONS.get(exc.status, exc.reason)
        response = refuse(request, Refusal(exc.status, reason))
        if hdrs.ALLOW in exc.headers:
            response.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return response


def create_app(*, max_callback_bytes: int) -> web.Application:
    """The web app; TASK_SERVICE and HEALTH_CHECK are set by a cleanup context of the caller.

    Serve it with webhook.server's WebhookRunner and WebhookSite for the timeouts.
    """
    app = web.Application(
        client_max_size=max_callback_bytes,
        middlewares=[track_requests, answer_in_json],
        handler_args=HANDLER_ARGS,
    )
    app[MAX_CALLBACK_BYTES] = max_callback_bytes
    app.router.add_post(CALLBACK_PATH, coze_callback)
    app.router.add_post(TELEGRAM_PATH, telegram_update)
    app.router.add_get("/metrics", metrics_page)
    add_health_routes(app)
    return app

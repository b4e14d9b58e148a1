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
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http import HttpProcessingError

from tasks import CallbackReceipt, CallbackReport, TaskService
from webhook.connections import body_received, dropped_for_slowness, track_requests
from webhook.contract import parse_callback
from webhook.encoding import content_encoding, decode_body
from webhook.health import add_health_routes
from webhook.refusal import Refusal
from webhook.server import HANDLER_ARGS

log = logging.getLogger(__name__)

TASK_SERVICE = web.AppKey("task_service", TaskService)
MAX_CALLBACK_BYTES = web.AppKey("max_callback_bytes", int)

CALLBACK_PATH = "/webhook/coze"


def _answer(status: int, message: str) -> web.Response:
    return web.json_response({"ok": 200 <= status < 300, "message": message}, status=status)


def _refuse(request: web.BaseRequest, refusal: Refusal) -> web.Response:
    if not dropped_for_slowness(request):  # if it was, the connection guard counts it
        log.info("refused %s from %s: %s", refusal.status, request.remote, refusal.reason)
    response = _answer(refusal.status, refusal.reason)
    if not request.content.is_eof():
        response.force_close()  # the rest of the body is not worth reading
    return response


async def coze_callback(request: web.Request) -> web.Response:
    try:
        report = await _receive(request)
    except Refusal as refusal:
        return _refuse(request, refusal)
    receipt = await request.app[TASK_SERVICE].handle_callback(report)
    if receipt is CallbackReceipt.BAD_TOKEN:
        return _refuse(request, Refusal(401, "bad token"))
    if receipt is CallbackReceipt.UNKNOWN_RUN:
        return _refuse(request, Refusal(404, "unknown run"))
    return _answer(200, "accepted")


async def _receive(request: web.Request) -> CallbackReport:
    """The report in the request's body, checked from the headers inward."""
    limit = request.app[MAX_CALLBACK_BYTES]
    if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
        raise Refusal(415, "Content-Type must be application/json")
    encoding = content_encoding(request.headers.getall(hdrs.CONTENT_ENCODING, []))
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "body too large")
    raw = await _read_body(request, limit)
    body_received(request)
    return parse_callback(decode_body(raw, encoding, limit))


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, at most `limit` bytes (413 past it); a body cut short is a 400."""
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise Refusal(413, "body too large")
    except (ConnectionError, web.RequestPayloadError, HttpProcessingError):
        raise Refusal(400, "body cut short") from None
    return bytes(body)


_HTTP_ERROR_REASONS = {404: "no such path", 405: "method not allowed"}


@web.middleware
async def answer_in_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 4xx (unknown path, wrong method) as the contract's JSON, logged once."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not 400 <= exc.status < 500:
            raise
        reason = _HTTP_ERROR_REASONS.get(exc.status, exc.reason)
        response = _refuse(request, Refusal(exc.status, reason))
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
    add_health_routes(app)
    return app

"""What every route of the public server shares: JSON answers, refusals logged in our own
words, and reading and parsing a JSON body within limits."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpProcessingError
from pydantic_core import from_json

from webhook.connections import body_received, dropped_for_slowness
from webhook.encoding import content_encoding, decode_body
from webhook.refusal import Refusal

log = logging.getLogger("webhook.app")


def answer(status: int, message: str) -> web.Response:
    return web.json_response({"ok": 200 <= status < 300, "message": message}, status=status)


def refuse(request: web.BaseRequest, refusal: Refusal) -> web.Response:
    if not dropped_for_slowness(request):  # if it was, the connection guard counts it
        log.info("refused %s from %s: %s", refusal.status, request.remote, refusal.reason)
    response = answer(refusal.status, refusal.reason)
    if not request.content.is_eof():
        response.force_close()  # the rest of the body is not worth reading
    return response


async def read_checked_body(request: web.Request, limit: int) -> bytes:
    """The request's JSON body, decoded, checked from the headers inward: 415 for another
    Content-Type or Content-Encoding, 413 past `limit`, 400 when cut short."""
    if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
        raise Refusal(415, "Content-Type must be application/json")
    encoding = content_encoding(request.headers.getall(hdrs.CONTENT_ENCODING, []))
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, "body too large")
    raw = await _read_body(request, limit)
    body_received(request)
    return decode_body(raw, encoding, limit)


def load_json(raw: bytes) -> Any:
    """The JSON value in `raw`, or Refusal(400) saying (in our words) what is wrong.

    pydantic-core's parser never recurses in Python and stops at 200 levels of nesting, so a
    body nested a thousand deep costs a few microseconds, not a RecursionError. It reads strict
    JSON in UTF-8: invalid UTF-8, a lone surrogate escape, a raw control character in a string,
    NaN or Infinity and trailing bytes are all invalid.
    """
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        nested = "recursion limit" in str(exc)
        raise Refusal(400, "JSON nested too deep" if nested else "not valid JSON") from None


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

"""POST /webhook/telegram: Telegram's updates in webhook mode.

Telegram sends each update with the secret token given to setWebhook in the header
X-Telegram-Bot-Api-Secret-Token. The token is compared as bytes in constant time (401 and
nothing stored otherwise). The update is stored in the inbox before the 200, so none is lost:
when storing fails Telegram gets a 500 and sends it again; one stored already is answered 200
and not handled twice. It is handled in the background, through the same per-chat ordered
processing as in polling mode. In polling mode (no receiver set) the path is 404.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from webhook.refusal import Refusal
from webhook.requests import answer, load_json, read_checked_body, refuse

log = logging.getLogger(__name__)

TELEGRAM_PATH = "/webhook/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Telegram's updates are small (a message is at most 4096 characters, plus entities).
MAX_UPDATE_BYTES = 1_048_576

#: Stores one update (a JSON object with an integer update_id) and hands it on for handling;
#: raises when it cannot be stored.
UpdateReceiver = Callable[[dict[str, Any]], Awaitable[None]]
TELEGRAM_RECEIVER: web.AppKey[UpdateReceiver] = web.AppKey("telegram_receiver")
TELEGRAM_SECRET: web.AppKey[bytes] = web.AppKey("telegram_secret")


async def telegram_update(request: web.Request) -> web.Response:
    receiver = request.app.get(TELEGRAM_RECEIVER)
    if receiver is None:
        return refuse(request, Refusal(404, "no such path"))
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, request.app[TELEGRAM_SECRET]):
        return refuse(request, Refusal(401, "bad secret token"))
    try:
        update = _parse(await read_checked_body(request, MAX_UPDATE_BYTES))
    except Refusal as refusal:
        return refuse(request, refusal)
    try:
        await receiver(update)
    except Exception as exc:
        # Not stored: Telegram sends it again later.
        log.error("could not store update %s (%s)", update["update_id"], type(exc).__name__)
        return answer(500, "could not store the update")
    return answer(200, "stored")


def _parse(raw: bytes) -> dict[str, Any]:
    value = load_json(raw)
    update_id = value.get("update_id") if isinstance(value, dict) else None
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise Refusal(400, "not an update")
    update: dict[str, Any] = value
    return update

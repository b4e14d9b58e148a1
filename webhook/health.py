"""Health: GET /healthz (liveness: the process serves requests) and GET /readyz (readiness:
the database answers, Telegram accepted the bot's token, and the instance is not stopping).

A load balancer or orchestrator restarts an instance whose /healthz fails, and sends traffic
only to instances whose /readyz answers 200.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

HealthCheck = Callable[[], Awaitable[bool]]
#: The database check (set by the caller's cleanup context).
HEALTH_CHECK: web.AppKey[HealthCheck] = web.AppKey("health_check")


@dataclass
class Readiness:
    """What the running bot reports about itself."""

    telegram: bool = False  # getMe succeeded (the token is good and Telegram answers)
    stopping: bool = False  # shutdown has begun


READINESS = web.AppKey("readiness", Readiness)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    check = request.app.get(HEALTH_CHECK)
    database = await check() if check is not None else False
    state = request.app[READINESS]
    ready = database and state.telegram and not state.stopping
    return web.json_response(
        {
            "ok": ready,
            "database": "ok" if database else "unreachable",
            "telegram": "ok" if state.telegram else "not connected",
            "stopping": state.stopping,
        },
        status=200 if ready else 503,
    )


def add_health_routes(app: web.Application) -> None:
    app[READINESS] = Readiness()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

"""Serving the webhook app: aiohttp's runner and a site whose connections are guarded.

    runner = WebhookRunner(app, ServerLimits(keepalive_timeout=15, read_timeout=10))
    await runner.setup()
    site = WebhookSite(runner, sock)
    await site.start()

The site makes each connection's request handler a `GuardedRequestHandler` (deadlines and a
ceiling on connections, see webhook.connections), configured as HANDLER_ARGS says.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from webhook.connections import ConnectionGuard, GuardedRequestHandler, ServerLimits
from webhook.http_log import HTTP_LOG

# For aiohttp's request handler, however the app is served: the webhook inflates bodies
# itself (webhook.encoding), and bad HTTP is logged as one short line (webhook.http_log).
HANDLER_ARGS: dict[str, Any] = {"auto_decompress": False, "logger": HTTP_LOG}


class WebhookRunner(web.AppRunner):
    """An AppRunner with the webhook's timeouts, and no access log."""

    def __init__(self, app: web.Application, limits: ServerLimits) -> None:
        self.limits = limits
        self.handler_options: dict[str, Any] = {
            **HANDLER_ARGS,
            "keepalive_timeout": limits.keepalive_timeout,
            # How long the rest of an unread body (say, after a 413) is read and discarded.
            "lingering_time": limits.read_timeout,
            "access_log": None,
        }
        super().__init__(app, handle_signals=False, **self.handler_options)


class WebhookSite(web.BaseSite):
    """Serves a WebhookRunner on a socket that is already bound and listening."""

    def __init__(self, runner: WebhookRunner, sock: socket.socket) -> None:
        super().__init__(runner)
        self._webhook_runner = runner
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"
        self.guard = ConnectionGuard(runner.limits)

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._webhook_runner.server
        assert server is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()
        options = self._webhook_runner.handler_options

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, guard=self.guard, **options)

        self._server = await loop.create_server(connection, sock=self._sock, backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        self.guard.close()

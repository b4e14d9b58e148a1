"""Every connection has a deadline, and their number a ceiling.

aiohttp closes a keep-alive connection left idle for `keepalive_timeout`, but it has no read
timeout: headers or a body dribbled a byte at a time, or half-sent and left there, hold a
connection (and a file descriptor) as long as the client likes. (aiohttp 3.14 arms its
keep-alive timer when a connection opens and after each answer, and it fires only while no
whole request line and headers have arrived: headers that never finish are dropped after
`keepalive_timeout`, a body that never finishes never is; older versions armed it after the
first answer only.) So each connection here is in one of three phases, with its own deadline:

- waiting for a request: closed after `keepalive_timeout` (as aiohttp does, kept here too);
- reading one, from its first byte until its body has been read: closed after `read_timeout`;
- handling it: no deadline (the handler's own work is bounded by the database).

When the open connections reach `max_connections` (by default far enough under the process's
open-file limit to leave room for one burst of accepts and the rest of the bot: 768 under the
common 1024), a new one closes the oldest connection that is waiting for a request, or is
closed itself if every one is busy. asyncio accepts a backlog's worth of connections at a time
before any reaches this guard, so a flood can still hit EMFILE for a moment: asyncio then
pauses accepting for a second, and bot.logs turns its error into one line a minute.
Connections closed on purpose are logged as one line a minute at most, however many.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import web

from webhook.http_log import Tally

log = logging.getLogger(__name__)


# asyncio accepts up to a backlog's worth of connections in one go, before any of them reaches
# the guard: that many file descriptors must be free on top of the ceiling.
ACCEPT_BURST = 128


def default_max_connections() -> int:
    """Leave room under the open-file limit for one burst of accepts, and for the database,
    Telegram and Coze."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 10_000
    return max(16, soft - ACCEPT_BURST - max(64, soft // 8))


@dataclass(frozen=True)
class ServerLimits:
    keepalive_timeout: float = 15.0
    read_timeout: float = 10.0
    max_connections: int = 0  # 0: default_max_connections()


class Phase(Enum):
    WAITING = "waiting for a request"
    READING = "reading a request"
    HANDLING = "handling a request"


class ConnectionGuard:
    """The open connections of one listening socket, oldest first."""

    def __init__(self, limits: ServerLimits) -> None:
        self.keepalive_timeout = limits.keepalive_timeout
        self.read_timeout = limits.read_timeout
        self.max_connections = limits.max_connections or default_max_connections()
        self._open: dict[GuardedRequestHandler, None] = {}
        self.timed_out = Tally(
            log,
            f"closed %d connection(s) whose request did not arrive within {self.read_timeout:g}s",
        )
        self.evicted = Tally(
            log,
            f"{self.max_connections} connections open: closed %d idle or new connection(s)",
        )

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: GuardedRequestHandler) -> bool:
        """Register a new connection; False if it must be closed at once (no room)."""
        if len(self._open) >= self.max_connections:
            idle = next((c for c in self._open if c.phase is Phase.WAITING), None)
            self.evicted.add()
            if idle is None:
                return False
            self.forget(idle)
            idle.force_close()
        self._open[connection] = None
        return True

    def forget(self, connection: GuardedRequestHandler) -> None:
        self._open.pop(connection, None)

    def close(self) -> None:
        self.timed_out.close()
        self.evicted.close()


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's request handler (one per connection), with the phases and deadlines above."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self.phase = Phase.WAITING
        self.timed_out = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.opened(self):
            self.force_close()
            return
        self._arm(self._guard.keepalive_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self.phase is Phase.WAITING:
            self._enter(Phase.READING)
        super().data_received(data)

    # Called for each request by `track_requests` and the handlers that read a body.

    def request_started(self, *, has_body: bool) -> None:
        if not has_body:
            self._enter(Phase.HANDLING)
        elif self.phase is not Phase.READING:  # a pipelined request: its body may be coming
            self._enter(Phase.READING)

    def body_received(self) -> None:
        self._enter(Phase.HANDLING)

    def request_finished(self) -> None:
        self._enter(Phase.WAITING)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        if phase is Phase.WAITING:
            self._arm(self._guard.keepalive_timeout)
        elif phase is Phase.READING:
            self._arm(self._guard.read_timeout)
        else:
            self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is None or self.phase is Phase.HANDLING:
            return
        if self.phase is Phase.READING:
            self.timed_out = True
            self._guard.timed_out.add()
        self._guard.forget(self)
        self.force_close()


def _connection(request: web.BaseRequest) -> GuardedRequestHandler | None:
    protocol = request.protocol
    return protocol if isinstance(protocol, GuardedRequestHandler) else None


def body_received(request: web.BaseRequest) -> None:
    """The handler has read the whole body: the request's read deadline no longer applies."""
    connection = _connection(request)
    if connection is not None:
        connection.body_received()


def dropped_for_slowness(request: web.BaseRequest) -> bool:
    """Whether the request's connection was closed because it did not arrive in time."""
    connection = _connection(request)
    return connection is not None and connection.timed_out


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection when a request starts and ends (no-op on other request handlers)."""
    connection = _connection(request)
    if connection is None:
        return await handler(request)
    connection.request_started(has_body=request.body_exists)
    try:
        return await handler(request)
    finally:
        connection.request_finished()

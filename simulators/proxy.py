"""A small round-robin reverse proxy: one public URL in front of several bot instances.

The soak (``simulators.soak --instances N``) puts it where nginx or a cloud load balancer would
be: the Coze callback URL and Telegram's webhook URL both point at it, so callbacks and updates
are spread across the instances. What it does, as nginx's ``upstream`` block does by default:

- each request goes to the next upstream in turn (round robin);
- an upstream that refuses the connection (its process is dead, or it has stopped listening)
  gets nothing: the request goes to the next one (``proxy_next_upstream error``), and that
  upstream is skipped for ``fail_timeout`` seconds (``max_fails=1``). When every upstream
  refuses, the client gets 502;
- a request an upstream accepted and then broke off (killed in the middle) is not sent again,
  since it may have had its effect (nginx does not retry a POST either): the client gets 502
  (504 past ``timeout``) and retries if it wants to (Telegram and Coze's HTTP node do);
- one connection per request to the upstream (nginx's default without ``keepalive``), so a
  dead upstream never leaves a stale pooled connection behind;
- bodies pass as they are, in both directions (nothing is decompressed); hop-by-hop headers
  are dropped, and X-Forwarded-For is added.

Every request handed to an upstream is recorded (`Forwarded`: which upstream, method, path,
when it was sent and answered, and the status), from the moment it is sent, so a caller can tell
what was in flight at a given moment; an optional observer sees each answered request with its
bodies. With a single upstream the proxy is a tap: the soak puts one between each bot instance
and the fake Telegram to see which instance made each call.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from simulators.base import SimulatorServer

#: Headers that belong to one connection, not to the request (RFC 9110 7.6.1), plus Host and
#: Content-Length, which the proxy's own client sets.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(eq=False)  # compared and hashed by identity: one object per request
class Forwarded:
    """One request handed to an upstream (a refused connection is not one)."""

    upstream: int  # index into the proxy's upstreams
    method: str
    path: str
    started: float  # time.monotonic() when it was sent
    ended: float | None = None  # when the answer came, or the upstream broke off
    status: int | None = None  # the upstream's answer; None while in flight or broken off

    @property
    def answered(self) -> bool:
        return self.status is not None

    def answered_by(self, moment: float) -> bool:
        return self.status is not None and self.ended is not None and self.ended <= moment


#: Called with each answered request, its request body and its response body.
Observer = Callable[[Forwarded, bytes, bytes], None]


class RoundRobinProxy(SimulatorServer):
    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        fail_timeout: float = 1.0,
        timeout: float = 60.0,
        observer: Observer | None = None,
    ) -> None:
        super().__init__()
        if not upstreams:
            raise ValueError("a proxy needs at least one upstream")
        self.upstreams = [url.rstrip("/") for url in upstreams]
        self.fail_timeout = fail_timeout
        self.timeout = timeout
        self.observer = observer
        self.records: list[Forwarded] = []
        self.refused: Counter[int] = Counter()  # connections refused, per upstream
        self.broken: Counter[int] = Counter()  # requests broken off, per upstream
        self.unavailable = 0  # requests answered 502 because every upstream refused
        self._next = 0
        self._down_until: dict[int, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            handler_args={"auto_decompress": False},  # pass bodies on as they came
        )
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        await super().start(host, port)

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forwarded_to(self, upstream: int) -> list[Forwarded]:
        return [record for record in self.records if record.upstream == upstream]

    # ---------------------------------------------------------------- forwarding

    def _order(self) -> Iterator[int]:
        """Every upstream once, starting with the next in turn; those marked down last."""
        count = len(self.upstreams)
        start = self._next
        self._next = (self._next + 1) % count
        turn = [(start + k) % count for k in range(count)]
        moment = time.monotonic()
        live = [k for k in turn if self._down_until.get(k, 0.0) <= moment]
        yield from live
        yield from (k for k in turn if k not in live)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None, "proxy not started"
        body = await request.read()
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP
        }
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        for upstream in self._order():
            record = Forwarded(upstream, request.method, request.path, time.monotonic())
            self.records.append(record)  # in flight from now on
            try:
                async with self._session.request(
                    request.method,
                    self.upstreams[upstream] + request.path_qs,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as response:
                    payload = await response.read()
            except aiohttp.ClientConnectorError:
                # Refused before anything was sent: the next upstream may take it.
                self.records.remove(record)
                self.refused[upstream] += 1
                self._down_until[upstream] = time.monotonic() + self.fail_timeout
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                record.ended = time.monotonic()
                self.broken[upstream] += 1
                status = 504 if isinstance(exc, TimeoutError) else 502
                return web.Response(status=status, text="the upstream broke off\n")
            record.ended = time.monotonic()
            record.status = response.status
            if self.observer is not None:
                self.observer(record, body, payload)
            answer_headers = {
                name: value
                for name, value in response.headers.items()
                if name.lower() not in HOP_BY_HOP
            }
            return web.Response(status=response.status, body=payload, headers=answer_headers)
        self.unavailable += 1
        return web.Response(status=502, text="no upstream is reachable\n")

"""One budget for all of the bot's Bot API calls: at most N in any sliding second, granted in
priority order.

Telegram lets a bot send about 30 messages a second. A leaky bucket (aiolimiter, what PTB's
AIORateLimiter uses) lets a full bucket out at once and then refills it, so up to twice the rate
leaves in one second, and a Bot API server that counts strictly answers the surplus with 429.
Here every call takes a place in one window: no more than `capacity` calls in any `window`
seconds. A call holds its place from the moment it may leave until `window` seconds after its
answer came back: Telegram counts a call when it arrives, somewhere in between, so two calls
that arrive less than a window apart are always both counted here, whatever the network did to
them on the way (holding the place only from the start lets a delayed call and a prompt one
arrive closer together than they left). When calls have to wait, the most urgent go first:
answers to the user (an acknowledgement, a reply to a command or a button) before texts, and
texts before progress edits, which are a courtesy.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    ANSWER = 0  # acknowledgements, replies to commands, answers to button presses
    TEXT = 1  # outcomes: texts and failure notices
    PROGRESS = 2  # progress shown in an acknowledgement


class SlidingBudget:
    def __init__(self, per_second: float, *, window: float = 1.0) -> None:
        if per_second <= 0 or window <= 0:
            raise ValueError("per_second and window must be positive")
        # N calls in any `window` seconds; below one a window, one call per 1/rate seconds.
        self.capacity = max(1, math.floor(per_second * window))
        self.window = 1 / per_second if per_second * window < 1 else window
        self._in_flight = 0  # calls sent whose answer has not come back yet
        self._ended: deque[float] = deque()  # when each call of the last window was answered
        self._queues: dict[Priority, deque[asyncio.Future[None]]] = {
            priority: deque() for priority in Priority
        }
        self._timer: asyncio.Handle | None = None

    def waiting(self, priority: Priority) -> int:
        """Calls of this priority waiting for a place."""
        return sum(not future.done() for future in self._queues[priority])

    @asynccontextmanager
    async def place(self, priority: Priority) -> AsyncIterator[None]:
        """Hold a place in the window for one call, made inside the block."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._in_flight -= 1
            loop = asyncio.get_running_loop()
            self._ended.append(loop.time())
            self._schedule(loop)

    async def _acquire(self, priority: Priority) -> None:
        """Wait for a place (after every more urgent call that waits); the caller holds it."""
        loop = asyncio.get_running_loop()
        if not self._queued_up_to(priority) and self._free(loop.time()):
            self._in_flight += 1
            return
        future: asyncio.Future[None] = loop.create_future()
        self._queues[priority].append(future)
        self._schedule(loop)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._in_flight -= 1  # granted as it was cancelled: give the place back
                self._ended.append(loop.time())
            else:
                future.cancel()
            self._schedule(loop)
            raise

    def _queued_up_to(self, priority: Priority) -> bool:
        return any(self.waiting(p) for p in Priority if p <= priority)

    def _free(self, moment: float) -> bool:
        while self._ended and self._ended[0] <= moment - self.window:
            self._ended.popleft()
        return self._in_flight + len(self._ended) < self.capacity

    def _next_waiter(self) -> asyncio.Future[None] | None:
        for priority in Priority:
            queue = self._queues[priority]
            while queue:
                future = queue.popleft()
                if not future.done():
                    return future
        return None

    def _grant(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        moment = loop.time()
        while self._free(moment):
            future = self._next_waiter()
            if future is None:
                return
            future.set_result(None)
            self._in_flight += 1
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Grant the next places when the window has room again."""
        if self._timer is not None or not any(self._queues.values()):
            return
        if self._free(loop.time()):
            self._timer = loop.call_soon(self._grant)
        elif self._ended:
            self._timer = loop.call_at(self._ended[0] + self.window, self._grant)
        # else every place is held by a call in flight: its end schedules the next grant

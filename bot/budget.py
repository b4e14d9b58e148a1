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

Texts and progress edits are also spaced evenly, one every window/capacity seconds: granted
together, a backlog's texts would fill the window at once, free their places together a window
later, take them together again, and so on, and an acknowledgement arriving just after such a
burst would wait most of a second for a place. Spaced, a place comes free every 1/rate seconds.
Answers are not spaced: they are few, and a user is waiting for them. (Keeping a place for
answers as well was measured and dropped: texts then used only 94% of the budget.)
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
        self._spacing = self.window / self.capacity  # between two texts or progress edits
        self._last_spaced = -math.inf  # when the last one was granted

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
        moment = loop.time()
        if not self._queued_up_to(priority) and self._may_go(priority, moment):
            self._take(priority, moment)
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

    def _may_go(self, priority: Priority, moment: float) -> bool:
        """A place is free now and, for a text or a progress edit, it is its turn."""
        return self._free(moment) and self._spaced_enough(priority, moment)

    def _spaced_enough(self, priority: Priority, moment: float) -> bool:
        return priority is Priority.ANSWER or moment >= self._last_spaced + self._spacing

    def _take(self, priority: Priority, moment: float) -> None:
        self._in_flight += 1
        if priority is not Priority.ANSWER:
            self._last_spaced = moment

    def _queued_up_to(self, priority: Priority) -> bool:
        return any(self.waiting(p) for p in Priority if p <= priority)

    def _free(self, moment: float) -> bool:
        while self._ended and self._ended[0] <= moment - self.window:
            self._ended.popleft()
        return self._in_flight + len(self._ended) < self.capacity

    def _next_priority(self) -> Priority | None:
        """The priority of the most urgent call waiting (cancelled waiters dropped)."""
        for priority in Priority:
            queue = self._queues[priority]
            while queue and queue[0].done():
                queue.popleft()
            if queue:
                return priority
        return None

    def _grant(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        moment = loop.time()
        while True:
            priority = self._next_priority()
            if priority is None or not self._may_go(priority, moment):
                break
            self._queues[priority].popleft().set_result(None)
            self._take(priority, moment)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Grant the next places when the window has room again (and, for a text or a
        progress edit, when the spacing allows)."""
        if self._timer is not None:
            return
        priority = self._next_priority()
        if priority is None:
            return
        moment = loop.time()
        if not self._free(moment):
            if self._ended:
                self._timer = loop.call_at(self._ended[0] + self.window, self._grant)
            # else every place is held by a call in flight: its end schedules the next grant
        elif self._spaced_enough(priority, moment):
            self._timer = loop.call_soon(self._grant)
        else:
            self._timer = loop.call_at(self._last_spaced + self._spacing, self._grant)

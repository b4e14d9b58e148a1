"""bot.budget: never more than N calls in any sliding window (counted from their start to a
window after their answer), the most urgent first."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bot.budget import Priority, SlidingBudget

pytestmark = pytest.mark.asyncio


def most_in_any_window(times: list[float], window: float) -> int:
    """The most calls that left within any `window` seconds (a call at each end counts once
    the window has moved past the first, as the budget counts)."""
    times = sorted(times)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_no_window_ever_holds_more_than_the_capacity() -> None:
    budget = SlidingBudget(100, window=0.1)  # 10 calls in any 0.1 s
    assert (budget.capacity, budget.window) == (10, 0.1)
    loop = asyncio.get_running_loop()
    granted: list[float] = []

    async def call(priority: Priority, lag: float) -> None:
        async with budget.place(priority):
            # The call reaches Telegram somewhere on its way: early or late.
            await asyncio.sleep(lag)
            granted.append(loop.time())

    await asyncio.gather(*(call(Priority(n % 3), 0.002 * (n % 5)) for n in range(45)))
    assert len(granted) == 45
    assert most_in_any_window(granted, 0.1) == 10


async def test_an_answer_goes_before_texts_and_texts_before_progress() -> None:
    budget = SlidingBudget(100, window=0.1)
    order: list[str] = []
    await fill(budget, Priority.TEXT)

    async def call(name: str, priority: Priority) -> None:
        async with budget.place(priority):
            order.append(name)

    waiting = [
        asyncio.create_task(call("progress", Priority.PROGRESS)),
        asyncio.create_task(call("text 1", Priority.TEXT)),
        asyncio.create_task(call("text 2", Priority.TEXT)),
    ]
    await asyncio.sleep(0)
    assert budget.waiting(Priority.TEXT) == 2
    waiting.append(asyncio.create_task(call("answer", Priority.ANSWER)))
    await asyncio.gather(*waiting)
    assert order == ["answer", "text 1", "text 2", "progress"]


async def test_an_urgent_call_with_room_left_passes_waiting_lower_ones() -> None:
    budget = SlidingBudget(100, window=0.1)
    await fill(budget, Priority.ANSWER)
    text = asyncio.create_task(take(budget, Priority.TEXT))
    await asyncio.sleep(0)
    assert not text.done()
    await text
    # Room again: an answer never waits behind texts queued earlier.
    await asyncio.wait_for(take(budget, Priority.ANSWER), 0.01)

    # A text waiting for its spacing (a tenth of a second here) with places free: an answer
    # asked for meanwhile goes at once, not after it.
    spaced = SlidingBudget(10, window=1.0)
    await take(spaced, Priority.TEXT)
    second_text = asyncio.create_task(take(spaced, Priority.TEXT))
    await asyncio.sleep(0)
    assert spaced.waiting(Priority.TEXT) == 1
    await asyncio.wait_for(take(spaced, Priority.ANSWER), 0.05)
    assert not second_text.done()
    await second_text


async def test_a_cancelled_wait_gives_its_turn_to_the_next() -> None:
    budget = SlidingBudget(100, window=0.1)
    await fill(budget, Priority.TEXT)
    first = asyncio.create_task(take(budget, Priority.TEXT))
    second = asyncio.create_task(take(budget, Priority.TEXT))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 1.0)
    assert first.cancelled()
    assert budget.waiting(Priority.TEXT) == 0


async def test_a_call_in_flight_holds_its_place_until_a_window_after_its_answer() -> None:
    budget = SlidingBudget(100, window=0.1)
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    started = 0

    async def slow() -> None:
        nonlocal started
        async with budget.place(Priority.ANSWER):  # answers are not spaced: all leave at once
            started += 1
            await release.wait()

    slow_calls = [asyncio.create_task(slow()) for _ in range(budget.capacity)]
    await asyncio.sleep(0)
    assert started == budget.capacity
    late = asyncio.create_task(take(budget, Priority.ANSWER))
    await asyncio.sleep(0.15)  # more than a window since they left: still in flight
    assert not late.done()
    release.set()
    await asyncio.gather(*slow_calls)
    answered = loop.time()
    await late
    assert loop.time() - answered >= 0.1 - 0.005


async def fill(budget: SlidingBudget, priority: Priority) -> None:
    for _ in range(budget.capacity):
        await take(budget, priority)


async def take(budget: SlidingBudget, priority: Priority) -> None:
    async with budget.place(priority):
        pass


async def test_below_one_call_a_window_the_calls_are_spaced_out() -> None:
    budget = SlidingBudget(0.5)
    assert (budget.capacity, budget.window) == (1, 2.0)
    for per_second, window in [(0, 1.0), (-1, 1.0), (10, 0.0), (10, -1.0)]:
        with pytest.raises(ValueError):
            SlidingBudget(per_second, window=window)


async def test_texts_are_spaced_so_an_answer_waits_one_spacing_not_a_window() -> None:
    """A backlog of texts granted at once would fill the window together and free it together
    a window later: an acknowledgement arriving in between would wait most of a window."""
    budget = SlidingBudget(20, window=1.0)  # 20 places; a text every 50 ms
    loop = asyncio.get_running_loop()
    granted: list[float] = []

    async def text() -> None:
        async with budget.place(Priority.TEXT):
            granted.append(loop.time())

    backlog = [asyncio.create_task(text()) for _ in range(40)]
    await asyncio.sleep(0.5)
    # Evenly spaced from the first: about ten in half a second, not the whole window's 20.
    assert 9 <= len(granted) <= 11, len(granted)
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert min(gaps) >= 0.05 - 0.005
    asked = loop.time()
    await take(budget, Priority.ANSWER)
    assert loop.time() - asked < 0.01  # a free place at once: the window is half used
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)

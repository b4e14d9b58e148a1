"""Writes that arrive together are written together: one transaction, one commit.

Every outcome is stored before its callback is answered (nothing acknowledged may be lost), so
written one by one each pays a commit, an fsync, of its own. Here writes queue up while a
write is under way; the writer then takes all of them (up to a batch), applies them in one
transaction and answers them all. Under load many share a commit; alone, a write waits for
nothing. Should a batch's transaction fail, each of its writes is made alone, so one that the
database refuses fails only itself.

GroupCommit is the scheme, for writes of any kind; OutcomeWriter uses it for outcomes (one
conditional UPDATE each, in `repository.apply_outcomes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise.transactions import in_transaction

from storage import repository
from storage.repository import ApplyResult, Outcome

log = logging.getLogger(__name__)

MAX_BATCH = 256

A = TypeVar("A")
T = TypeVar("T")
#: Writes several arguments at once: a result for each, in order.
Many = Callable[[list[A]], Awaitable[list[T]]]


class GroupCommit:
    """Small writes from many callers, written together: one transaction, one commit.

    A write is a `many` function and one argument: the writes waiting when a transaction
    starts are grouped by their function, each function is called once with its group's
    arguments (one statement for all of them, where it can) inside the shared transaction, and
    each caller is answered with its own result once the transaction is committed. Should a
    transaction fail, each of its writes is tried alone, so one that the database refuses
    fails only its own caller.

    `transaction=False`: the one `many` ever written through makes its own transaction (its
    whole batch in one), so none is opened around it.
    """

    def __init__(self, name: str, *, transaction: bool = True) -> None:
        self._name = name
        self._transaction = transaction
        self._queue: deque[_Write] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # transactions written

    async def write(self, many: Many[A, T], argument: A) -> T:
        """Have `many([argument, ...])` write this argument (with others waiting) in the next
        transaction; this argument's result once that is committed."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(many, argument, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name=self._name)
        # Shielded: a caller that goes away (a dropped connection) still has its write
        # committed (or not) whole.
        result: T = await asyncio.shield(answer)
        return result

    async def drain(self) -> None:
        """Wait until everything queued has been written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            if not await self._write_batch(batch) and len(batch) > 1:
                log.warning("%d writes could not be made together; making each", len(batch))
                for write in batch:
                    await self._write_batch([write])

    async def _write_batch(self, batch: list[_Write]) -> bool:
        """Make the batch's writes in one transaction and answer each; False if it failed (a
        batch of one then answers with the error)."""
        groups: dict[Many[Any, Any], list[_Write]] = {}
        for write in batch:
            groups.setdefault(write.many, []).append(write)
        try:
            async with in_transaction() if self._transaction else contextlib.nullcontext():
                results = {
                    many: await many([write.argument for write in writes])
                    for many, writes in groups.items()
                }
        except Exception as exc:
            if len(batch) == 1 and not batch[0].answer.done():
                batch[0].answer.set_exception(exc)
            return False
        self.batches += 1
        for many, writes in groups.items():
            for write, result in zip(writes, results[many], strict=True):
                if not write.answer.done():
                    write.answer.set_result(result)
        return True


@dataclass
class _Write:
    many: Many[Any, Any]
    argument: Any
    answer: asyncio.Future[Any]


class OutcomeWriter:
    """Outcomes written together (GroupCommit), each batch by `repository.apply_outcomes`,
    which is one transaction of its own."""

    def __init__(self) -> None:
        self._writes = GroupCommit("outcome-writer", transaction=False)

    @property
    def batches(self) -> int:
        """Transactions written (for the benchmark)."""
        return self._writes.batches

    async def apply(self, run_id: str, outcome: Outcome, *, via_callback: bool) -> ApplyResult:
        """Store the outcome (with whatever else is waiting); what became of it."""
        return await self._writes.write(_apply_outcomes, (run_id, outcome, via_callback))

    async def drain(self) -> None:
        """Wait until everything queued has been written."""
        await self._writes.drain()


async def _apply_outcomes(items: list[tuple[str, Outcome, bool]]) -> list[ApplyResult]:
    # Looked up at each batch, not bound at import (a test stands in for it).
    return await repository.apply_outcomes(items)

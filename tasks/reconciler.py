"""The reconciler: nothing waits forever on a callback that may never come.

Coze sends no webhook of its own; the workflow's last node calls us, and that call can be
lost. So, on a timer, this loop
- times out tasks past their deadline (the user is told, with Retry), after one last look
  at the run history for those that have a run, and
- checks runs that have been quiet for `reconcile_after` against Coze's run history, settling
  them through the same transition as a callback. A run still going is checked again later,
  each pause twice the last.

Run-history calls spend the same QPS budget as starting runs, so they are few: only tasks whose
callback has not arrived, at most `max_concurrent` at a time, at most `rate_per_second`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from typing import Protocol

from aiolimiter import AsyncLimiter
from tortoise.timezone import now

from coze import CozeCallError, RunHistory, RunStatus
from storage import Task, TaskState, repository
from storage.repository import ApplyResult
from tasks.log_context import about
from tasks.service import TaskService

log = logging.getLogger(__name__)

# "Execution record not found": possibly a record not written yet; the deadline bounds the wait.
RECORD_NOT_FOUND = 4314
#: The shortest pause between two passes, however soon the next check is due.
MIN_PAUSE_SECONDS = 0.05


class HistoryReader(Protocol):
    async def run_history(self, execute_id: str) -> RunHistory: ...


def rate_limiter(per_second: float) -> AsyncLimiter:
    """At most `per_second` acquisitions per second, evenly spaced: no bursts."""
    return AsyncLimiter(1, 1.0 / per_second)


class Reconciler:
    def __init__(
        self,
        history: HistoryReader,
        service: TaskService,
        *,
        scan_interval: float,
        rate_per_second: float,
        max_concurrent: int,
    ) -> None:
        self._history = history
        self._service = service
        self._scan_interval = scan_interval
        self._limiter = rate_limiter(rate_per_second)
        self._max_concurrent = max_concurrent
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._stopping = asyncio.Event()
        self._checks: dict[int, asyncio.Task[bool]] = {}
        # When the next pass is planned; a run started with a check due sooner moves it.
        self._wake_at: dt.datetime | None = None
        self._wake = asyncio.Event()
        service.on_check_scheduled = self._check_scheduled

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                pause = self._scan_interval
                try:
                    await self.run_once()
                    pause = await self._until_next_check()
                except Exception:
                    log.exception("reconciliation pass failed; trying again later")
                await self._sleep(pause)
        finally:
            # A check only reads Coze's history: one cut short is simply made after a restart.
            for check in self._checks.values():
                check.cancel()
            await asyncio.gather(*self._checks.values(), return_exceptions=True)

    async def _until_next_check(self) -> float:
        """Seconds to the next due check (so that, polling, an outcome is read when due),
        at most the scan interval, which also bounds how late a deadline is noticed."""
        due = await repository.next_check_due(
            exclude=self._checks.keys(), lease=self._service.claims.lease
        )
        if due is None:
            return self._scan_interval
        return min(self._scan_interval, max(MIN_PAUSE_SECONDS, (due - now()).total_seconds()))

    async def _sleep(self, pause: float) -> None:
        """Until the next pass is due: `pause` seconds from now, or sooner when a run starts
        whose first check is due before then; at once when stopping."""
        self._wake_at = now() + dt.timedelta(seconds=pause)
        while not self._stopping.is_set():
            left = (self._wake_at - now()).total_seconds()
            if left <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wake.wait()
        self._wake_at = None

    def _check_scheduled(self, due: dt.datetime) -> None:
        if self._wake_at is not None and due < self._wake_at:
            self._wake_at = max(due, now() + dt.timedelta(seconds=MIN_PAUSE_SECONDS))
            self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run_once(self) -> int:
        """One pass: expire overdue tasks, and start the checks that are due (they run in the
        background, within the rate limit, so a long queue never delays a deadline); the
        number of checks started."""
        claims = self._service.claims
        for task in await self._service.overdue():
            if task.id in self._checks:
                continue  # a check under way decides
            if self._may_check(task):
                # One last look before giving up: the run may have finished with its callback
                # lost since the last check.
                if await repository.claim_check(task.id, task.run_id, claims.lease):
                    self._spawn(task, final=True)
            else:
                await self._service.expire(task)
        due = await repository.due_for_check(
            now(), limit=self._max_concurrent * 16, exclude=self._checks.keys(), lease=claims.lease
        )
        started = 0
        for task in due:
            if self._stopping.is_set():
                break
            # Claimed, so that no other instance checks the same run meanwhile.
            if await repository.claim_check(task.id, task.run_id, claims.lease):
                self._spawn(task, final=False)
                started += 1
        return started

    @staticmethod
    def _may_check(task: Task) -> bool:
        return (
            task.state == TaskState.PROCESSING
            and task.execute_id is not None
            and not task.callback_received
        )

    def _spawn(self, task: Task, *, final: bool) -> None:
        check = asyncio.create_task(self._check(task, final=final), name=f"check-task-{task.id}")
        self._checks[task.id] = check
        self._service.claims.tasks.add(task.id)
        check.add_done_callback(functools.partial(self._checked, task.id))

    def _checked(self, task_id: int, check: asyncio.Task[bool]) -> None:
        self._checks.pop(task_id, None)
        self._service.claims.tasks.discard(task_id)
        if not check.cancelled() and check.exception() is not None:
            log.error("task %s: run-history check failed", task_id, exc_info=check.exception())

    async def _check(self, task: Task, *, final: bool) -> bool:
        with about(task.id, task.run_id):
            return await self._check_run(task, final=final)

    async def _check_run(self, task: Task, *, final: bool) -> bool:
        """Ask Coze how the run is doing and settle the task if it is done. A `final` check
        (at the deadline) that finds nothing settled times the task out."""
        if self._stopping.is_set():
            return False
        assert task.execute_id is not None
        async with self._semaphore, self._limiter:
            if self._stopping.is_set():
                return False
            try:
                history = await self._history.run_history(task.execute_id)
            except CozeCallError as exc:
                self._service.metrics.coze_call("run_history", exc.kind.value)
                self._log_failed_check(task, exc)
                history = None
            else:
                self._service.metrics.coze_call("run_history", "ok")
        if history is None or history.status is RunStatus.RUNNING:
            if final:
                await self._service.expire(task)
                return False
            if history is not None:
                log.info(
                    "task %s: run %s still running (check %d)", task.id, task.run_id, task.checks
                )
            await self._service.check_later(task)
            return False
        if history.status is RunStatus.FAIL:
            log.warning(
                "task %s: run %s failed per Coze's run history: error %s: %s",
                task.id,
                task.execute_id,
                history.error_code,
                history.error_message,
            )
        result = await self._service.settle_from_history(task, history)
        log.info(
            "task %s: run %s settled from run history (%s): %s",
            task.id,
            task.run_id,
            history.status.value,
            result.value,
        )
        return result is ApplyResult.APPLIED

    @staticmethod
    def _log_failed_check(task: Task, exc: CozeCallError) -> None:
        if exc.transient or exc.code == RECORD_NOT_FOUND:
            log.warning("task %s: no run history yet, looking again later: %s", task.id, exc.detail)
        else:
            # The task times out at its deadline; the operator learns what to fix meanwhile.
            log.error(
                "task %s: cannot read the run history: %s. Operator: %s",
                task.id,
                exc.detail,
                exc.operator_hint,
            )

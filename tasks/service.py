"""TaskService: accept links, start Coze runs, apply outcomes, grant retries.

Everything is stored before anything is acted on: a task exists (pending) before its run is
started, and an outcome is stored (awaiting delivery) before anyone is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Literal, Protocol

from aiolimiter import AsyncLimiter
from tortoise.timezone import now

from coze import CozeCallError, RunHistory, RunStatus, StartedRun, callback_token
from storage import Task, User, history, repository
from storage.repository import (
    ApplyResult,
    NewTask,
    Outcome,
    RetryDecision,
    RetryRefusal,
    UserNames,
)
from tasks.claims import Claims
from tasks.log_context import about
from tasks.metrics import Metrics
from tasks.outbox import Outbox
from tasks.outcome_writer import OutcomeWriter
from tasks.quotas import UNLIMITED, Allowance, Quotas
from tasks.text import clean_text
from tasks.videos import video_key

log = logging.getLogger(__name__)

DISPATCH_INTERVAL_SECONDS = 5.0
DISPATCH_BATCH = 100  # pending tasks started per look when runs are not limited


class FailureKind(StrEnum):
    """Why a task failed, beyond the Coze call errors of coze.client.ErrorClass."""

    WORKFLOW_FAILED = "workflow_failed"  # the workflow ran and reported a failure
    NO_TEXT = "no_text"  # the workflow succeeded but found no text


class WorkflowStarter(Protocol):
    async def start(self, link: str, run_id: str) -> StartedRun: ...


class WorkflowClient(WorkflowStarter, Protocol):
    async def run_history(self, execute_id: str) -> RunHistory: ...


@dataclass(frozen=True)
class StartPolicy:
    """How transient start failures are retried: `attempts` tries in all, pauses doubling."""

    attempts: int = 4
    backoff_seconds: float = 2.0

    def pause_before(self, attempt: int) -> float:
        """The pause before try number `attempt` (2, 3, ...)."""
        return float(self.backoff_seconds * 2 ** (attempt - 2))


@dataclass(frozen=True)
class UserInfo:
    id: int
    first_name: str
    username: str | None
    language_code: str | None = None


@dataclass(frozen=True)
class Submission:
    tasks: list[Task]
    new: bool  # False: the message was handled before (a replayed update)
    # Links the user's quotas left out (the allowance says why), and each queued task's place
    # in the line for a Coze run (tasks not listed start at once).
    refused: int = 0
    allowance: Allowance = UNLIMITED
    places: dict[int, int] | None = None


class CallbackReceipt(Enum):
    ACCEPTED = "accepted"  # stored (or a harmless duplicate / stale attempt)
    BAD_TOKEN = "bad_token"
    UNKNOWN_RUN = "unknown_run"


@dataclass(frozen=True)
class CallbackReport:
    """A callback from the workflow's HTTP node, already checked for shape."""

    run_id: str
    token: str
    status: Literal["success", "failed", "processing"]
    text: str = ""
    error: str = ""
    progress: int | None = None


def new_run_id() -> str:
    return uuid.uuid4().hex


def workflow_outcome(*, succeeded: bool, text: str, error: str, trimmed: bool = False) -> Outcome:
    """What a finished run brought, however we learnt it (its callback or its run history).

    A success without text is a failure of its own kind. On a failure the workflow's own
    message is kept as the detail; the user reads it only when it is a plain sentence
    (bot.delivery decides), next to the words for a failed workflow.
    """
    # NUL and other control characters never reach the database or a user.
    text, error = clean_text(text), clean_text(error)
    if succeeded and text.strip():
        return Outcome(succeeded=True, text=text, trimmed=trimmed)
    if succeeded:
        return Outcome(
            succeeded=False,
            error_kind=FailureKind.NO_TEXT.value,
            error_detail="the workflow returned no text",
        )
    return Outcome(
        succeeded=False, error_kind=FailureKind.WORKFLOW_FAILED.value, error_detail=error
    )


def outcome_of_history(history: RunHistory) -> Outcome:
    """A finished run's history as the outcome a callback would have brought."""
    return workflow_outcome(
        succeeded=history.status is RunStatus.SUCCESS,
        text=history.text,
        error=history.error_message.strip()
        or f"the workflow failed (Coze error {history.error_code})",
        trimmed=history.output_trimmed,
    )


class TaskService:
    def __init__(
        self,
        starter: WorkflowStarter,
        *,
        callback_secret: str,
        previous_callback_secret: str = "",
        max_retries: int,
        timeout_seconds: float,
        reconcile_after_seconds: float = 120.0,
        max_check_interval_seconds: float = 600.0,
        start_policy: StartPolicy | None = None,
        quotas: Quotas | None = None,
        max_concurrent_runs: int = 0,
        max_starts_per_second: float = 10.0,
        reuse_hours: float = 0.0,
        metrics: Metrics | None = None,
        claims: Claims | None = None,
    ) -> None:
        self._starter = starter
        # The current secret first; the previous one (during a rotation) is still accepted.
        self._callback_secrets = tuple(
            secret for secret in (callback_secret, previous_callback_secret) if secret
        )
        self.max_retries = max_retries
        self._timeout = dt.timedelta(seconds=timeout_seconds)
        self._reconcile_after = dt.timedelta(seconds=reconcile_after_seconds)
        self._max_check_interval = dt.timedelta(seconds=max_check_interval_seconds)
        self._start_policy = start_policy or StartPolicy()
        # Set whenever something awaits sending (an outcome, or progress to show); the
        # delivery loop waits on it.
        self.outbox_ready = asyncio.Event()
        # Told when a run starts, with when its first run-history check is due: the reconciler
        # sleeping past that wakes up for it (poll mode's first look comes after seconds).
        self.on_check_scheduled: Callable[[dt.datetime], None] | None = None
        self.metrics = metrics or Metrics()
        # This instance's claims on work other instances may also see (tasks.claims).
        self.claims = claims or Claims()
        self.metrics.count_claims(self.claims.held)
        self.outbox = Outbox(self.metrics, self.claims.lease)
        self.outcomes = OutcomeWriter()
        self._background: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.quotas = quotas or Quotas()
        # A video extracted within this window is answered from the stored text (0: never).
        self._reuse_window = dt.timedelta(hours=reuse_hours)
        # Coze runs in flight for the whole bot (0: no limit); tasks past it wait, pending, in
        # arrival order. Starts are spaced out so run-history checks keep their share of QPS.
        self._max_runs = max_concurrent_runs
        self._start_limiter = AsyncLimiter(1, 1.0 / max_starts_per_second)
        self._starting: set[int] = set()  # tasks whose run is being started right now
        self._dispatch_wanted = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # --- accepting links ---------------------------------------------------------------------

    async def submit(
        self,
        user: UserInfo,
        *,
        chat_id: int,
        message_id: int,
        links: list[str],
        exempt: bool = False,
    ) -> Submission:
        """Store one pending task per link the user's quotas allow (all if `exempt`). Call
        `start_all` once the user has been answered.

        A message handled before (an update replayed after a crash) gets its tasks back, not
        new ones; they were started (or are resumed at start-up) already.
        """
        existing = await repository.tasks_of_message(chat_id, message_id)
        if existing:
            return Submission(existing, new=False)
        wanted = [await self._new_task(link) for link in links]
        # Answers from an earlier extraction cost no Coze run, so no quota either.
        to_run = [item for item in wanted if item.reuse is None]
        allowance = UNLIMITED if exempt else await self.quotas.allowance(user.id)
        # The links that need a run are taken in order, as many as the quotas allow.
        refused_runs = to_run[allowance.allows(len(to_run)) :]
        taken = [item for item in wanted if item not in refused_runs]
        refused = len(wanted) - len(taken)
        if not taken:
            return Submission([], new=True, refused=refused, allowance=allowance)
        tasks = await repository.create_tasks(
            user_id=user.id,
            chat_id=chat_id,
            request_message_id=message_id,
            links=taken,
            # The deadline is set when the run is started (a queued task waits without one).
            expires_at=None,
            names=UserNames(user.first_name, user.username, user.language_code),
        )
        if any(item.reuse is not None for item in taken):
            self.outbox_ready.set()
        return Submission(
            tasks,
            new=True,
            refused=refused,
            allowance=allowance,
            places=await self._queue_places([t for t in tasks if t.reused_from is None]),
        )

    async def _new_task(self, link: str) -> NewTask:
        key = video_key(link)
        reuse = None
        if self._reuse_window:
            reuse = await repository.reusable_text(key, now() - self._reuse_window)
        return NewTask(link=link, run_id=new_run_id(), video_key=key, reuse=reuse)

    async def _queue_places(self, tasks: list[Task]) -> dict[int, int]:
        """Each new task's place in the line for a run, for those that must wait."""
        if not self._max_runs or not tasks:
            return {}
        ahead = await repository.runs_in_flight_or_waiting(
            before_task_id=tasks[0].id, exclude=self._starting
        )
        ahead += len(self._starting)
        places = {}
        for index, task in enumerate(tasks):
            number_in_line = ahead + index + 1
            if number_in_line > self._max_runs:
                places[task.id] = number_in_line - self._max_runs
        return places

    async def set_ack_message(self, task: Task, message_id: int) -> None:
        await repository.set_ack_message(task.id, message_id)

    def start_all(self, tasks: list[Task]) -> None:
        """Have the tasks' runs started in the background: the caller never waits on Coze.

        Pending tasks are started in arrival order, as long as fewer than max_concurrent_runs
        runs are in flight; the others wait their turn (they are pending in the database, so
        a restart finds them too).
        """
        if self._closing.is_set():
            return
        self._dispatch_wanted.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="run-starter")

    async def resume_pending(self) -> int:
        """Start the runs of tasks left pending (e.g. by a crash before Coze was called)."""
        pending = await repository.pending_tasks(lease=self.claims.lease)
        self.start_all(pending)
        return len(pending)

    def run_finished(self) -> None:
        """A run left flight (settled, failed to start, timed out): a waiting task may start."""
        if self._max_runs:
            self._dispatch_wanted.set()

    async def _dispatch(self) -> None:
        while not self._closing.is_set():
            self._dispatch_wanted.clear()
            try:
                await self._start_waiting()
            except Exception:
                log.exception("could not start waiting tasks; trying again shortly")
            # Woken by new tasks and finished runs; the timer catches anything else (a run
            # timed out by the reconciler, a task pending after a database hiccup).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISPATCH_INTERVAL_SECONDS):
                    await self._dispatch_wanted.wait()

    async def _start_waiting(self) -> None:
        lease = self.claims.lease
        if self._max_runs:
            # Runs in flight anywhere, and starts under way here and in other instances. The
            # starts here are counted before the database is asked: one that finishes while
            # the count is on its way is then counted twice (it waits a moment), never not
            # at all (a run too many).
            starting_here = len(self._starting)
            in_flight = (
                starting_here
                + await repository.processing_count()
                + await repository.starts_under_way(lease)
            )
            room = self._max_runs - in_flight
        else:
            room = DISPATCH_BATCH
        if room <= 0:
            return
        for task in await repository.pending_tasks(limit=room, exclude=self._starting, lease=lease):
            if self._closing.is_set():
                return
            self._starting.add(task.id)
            # The claim: no other instance starts this run. The deadline counts from the
            # start of the run, not from a wait in the queue.
            if not await repository.claim_start(task.id, task.run_id, now() + self._timeout, lease):
                self._starting.discard(task.id)
                continue
            self.claims.tasks.add(task.id)
            self._spawn(self._start_tracked(task.id, task.run_id, task.input_url))

    async def _start_tracked(self, task_id: int, run_id: str, link: str) -> None:
        try:
            await self._start(task_id, run_id, link)
        finally:
            self._starting.discard(task_id)
            self.claims.tasks.discard(task_id)
            self._dispatch_wanted.set()

    async def _start(self, task_id: int, run_id: str, link: str) -> None:
        with about(task_id, run_id):
            await self._start_run(task_id, run_id, link)

    async def _start_run(self, task_id: int, run_id: str, link: str) -> None:
        policy = self._start_policy
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                if await self._closing_within(policy.pause_before(attempt)):
                    return  # still pending: started again at the next start-up
                if not await repository.is_pending_run(task_id, run_id):
                    log.info("task %s: no longer pending (timed out?), not starting", task_id)
                    return
            try:
                await self._start_limiter.acquire()
                run = await self._starter.start(link, run_id)
            except CozeCallError as exc:
                self.metrics.coze_call("start", exc.kind.value)
                if exc.transient and attempt < policy.attempts:
                    log.warning(
                        "task %s: could not start the Coze run (try %d of %d), trying again "
                        "in %.1f s: %s",
                        task_id,
                        attempt,
                        policy.attempts,
                        policy.pause_before(attempt + 1),
                        exc.detail,
                    )
                    continue
                await self._start_failed(task_id, run_id, exc, attempt)
                return
            self.metrics.coze_call("start", "ok")
            await self._started(task_id, run_id, run)
            return

    async def _start_failed(
        self, task_id: int, run_id: str, exc: CozeCallError, attempts: int
    ) -> None:
        # The user is told in words (texts.FAILURE_WORDS[kind]); the operator reads what to fix.
        log.error(
            "task %s: could not start the Coze run after %d tr%s: %s. Operator: %s",
            task_id,
            attempts,
            "y" if attempts == 1 else "ies",
            exc.detail,
            exc.operator_hint,
        )
        if await repository.fail_start(
            task_id=task_id, run_id=run_id, error_kind=exc.kind.value, error_detail=exc.detail
        ):
            self.outbox_ready.set()

    async def _started(self, task_id: int, run_id: str, run: StartedRun) -> None:
        first_check = now() + self._reconcile_after
        started = await repository.mark_started(
            task_id=task_id, run_id=run_id, execute_id=run.execute_id, next_check_at=first_check
        )
        if started and self.on_check_scheduled is not None:
            self.on_check_scheduled(first_check)
        log.info(
            "task %s: run %s started (execute_id %s)%s",
            task_id,
            run_id,
            run.execute_id,
            "" if started else ", already settled",
        )

    # --- outcomes ----------------------------------------------------------------------------

    async def handle_callback(self, report: CallbackReport) -> CallbackReceipt:
        with about(None, report.run_id):
            return await self._handle_callback(report)

    async def _handle_callback(self, report: CallbackReport) -> CallbackReceipt:
        if not self.token_is_valid(report.run_id, report.token):
            return CallbackReceipt.BAD_TOKEN
        if report.status == "processing":
            result = await repository.update_progress(report.run_id, report.progress or 0)
            if result is ApplyResult.APPLIED:
                self.outbox_ready.set()
        else:
            result = await self._settle(report.run_id, self._outcome_of(report), via_callback=True)
            if result is ApplyResult.APPLIED:
                self.outbox_ready.set()
                self.run_finished()
        log.info("callback for run %s (%s): %s", report.run_id, report.status, result.value)
        if result is ApplyResult.UNKNOWN:
            return CallbackReceipt.UNKNOWN_RUN
        return CallbackReceipt.ACCEPTED

    async def _settle(self, run_id: str, outcome: Outcome, *, via_callback: bool) -> ApplyResult:
        """Apply an outcome; a duplicate (its task settled already) is answered from one read,
        with no write at all."""
        answered = await repository.settled_already(run_id)
        if answered is not None:
            return answered
        return await self.outcomes.apply(run_id, outcome, via_callback=via_callback)

    def token_is_valid(self, run_id: str, token: str) -> bool:
        """Whether `token` is the run's callback token under the current or previous secret.

        Compared as bytes in constant time: any text an attacker sends (non-ASCII, lone
        surrogates) is simply a wrong token.
        """
        given = token.encode("utf-8", "surrogatepass")
        valid = False
        for secret in self._callback_secrets:
            expected = callback_token(secret, run_id).encode()
            valid |= hmac.compare_digest(expected, given)
        return valid

    async def settle_from_history(self, task: Task, history: RunHistory) -> ApplyResult:
        """Apply what Coze's run history says, through the same transition as a callback."""
        result = await self._settle(task.run_id, outcome_of_history(history), via_callback=False)
        if result is ApplyResult.APPLIED:
            self.outbox_ready.set()
            self.run_finished()
        return result

    async def check_later(self, task: Task) -> None:
        """The run is still going: look again later, each pause twice the last."""
        pause = self._reconcile_after * 2 ** min(task.checks + 1, 20)
        pause = min(pause, self._max_check_interval)
        await repository.schedule_check(
            task_id=task.id, run_id=task.run_id, next_check_at=now() + pause
        )

    async def overdue(self) -> list[Task]:
        """Tasks past their deadline with no outcome yet."""
        return await repository.overdue_tasks(now(), self.claims.lease)

    async def expire(self, task: Task) -> bool:
        """Time out a task past its deadline; its user is told (with Retry)."""
        with about(task.id, task.run_id):
            return await self._expire(task)

    async def _expire(self, task: Task) -> bool:
        expired = await repository.expire(task, now())
        if expired:
            log.warning(
                "task %s: no outcome within the deadline (state was %s): timed out",
                task.id,
                task.state,
            )
            self.outbox_ready.set()
            self.run_finished()
        return expired

    @staticmethod
    def _outcome_of(report: CallbackReport) -> Outcome:
        return workflow_outcome(
            succeeded=report.status == "success",
            text=report.text,
            error=report.error.strip() or "the workflow reported a failure",
        )

    # --- retry -------------------------------------------------------------------------------

    async def retry(
        self,
        *,
        user_id: int,
        task_id: int | None = None,
        owner: int | None = None,
        number: int | None = None,
        exempt: bool = False,
        refresh: bool = False,
    ) -> RetryDecision | Allowance:
        """Start a new run of a finished task, if the user owns it, has retries left and the
        quotas allow one more task (a Retry counts as a task); the allowance when they don't.

        The task is the owner's #number, or (a button of the old kind) the task `task_id`.
        `refresh`: a new extraction of a text answered from an earlier one (spends no retry).
        """
        if task_id is None:
            task = (
                await history.task_by_number(user_id, number)
                if owner == user_id and number is not None
                else None
            )
            if task is None:
                return RetryDecision(None, RetryRefusal.NOT_FOUND)
            task_id = task.id
        if not exempt:
            allowance = await self.quotas.allowance(user_id)
            if not allowance.allows(1) and await repository.get_user_task(user_id, task_id):
                return allowance
        decision = await repository.begin_retry(
            task_id=task_id,
            user_id=user_id,
            new_run_id=new_run_id(),
            max_retries=self.max_retries,
            expires_at=now() + self._timeout,
            refresh=refresh,
        )
        if decision.refusal is None and decision.task is not None:
            self.start_all([decision.task])
        return decision

    # --- reading -----------------------------------------------------------------------------

    async def user(self, user_id: int) -> User | None:
        return await repository.get_user(user_id)

    async def task_of(self, user_id: int, number: int) -> Task | None:
        """The user's task #number (their own numbering)."""
        return await history.task_by_number(user_id, number)

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _closing_within(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the service is closing; True if it is closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        return self._closing.is_set()

    async def close(self, grace_seconds: float = 5.0) -> None:
        """Let run starts in flight finish; cancel the rest (they stay pending, resumed later).

        A start waiting to try again gives up at once: its task stays pending.
        """
        self._closing.set()
        self._dispatch_wanted.set()
        await self.outcomes.drain()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if not self._background:
            return
        _, still_running = await asyncio.wait(set(self._background), timeout=grace_seconds)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*still_running, return_exceptions=True)

"""The write path of callbacks and deliveries, statement by statement: what each costs the
database (counted on SQLite with the real connection's trace callback, BEGIN and COMMIT
included), and that the prebuilt statements (UPDATE ... RETURNING, INSERT ... ON CONFLICT)
answer the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tortoise import connections
from tortoise.timezone import now

from coze import StartedRun, callback_token
from storage import ChatLease, Task, TaskState, User, claims, repository
from storage.claims import Lease
from storage.repository import ApplyResult, Outcome, OutcomeRef
from tasks import CallbackReceipt, CallbackReport, TaskService
from tasks.outbox import Outbox

pytestmark = pytest.mark.asyncio

SECRET = "write-path-secret-0123456789"
ANN = Lease("ann:8080", 30.0)
BOB = Lease("bob:8080", 30.0)
TEXT = Outcome(succeeded=True, text="the words of the video")
_numbers = itertools.count(1)


async def new_tasks(count: int, *, user_id: int = 7, separate_chats: bool = False) -> list[Task]:
    """`count` running tasks of one user (each in a chat of its own if `separate_chats`)."""
    await repository.upsert_user(user_id, "User", None)
    tasks = []
    for _ in range(count):
        n = next(_numbers)
        chat_id = 10_000 + n if separate_chats else user_id
        tasks.append(
            await repository.create_task(
                user_id=user_id,
                chat_id=chat_id,
                request_message_id=n,
                input_url=f"https://v.douyin.com/{n}/",
                run_id=f"run-{n}",
            )
        )
    await Task.filter(id__in=[t.id for t in tasks]).update(state=TaskState.PROCESSING)
    return [await Task.get(id=t.id) for t in tasks]


class Trace:
    """Every statement SQLite runs on Tortoise's connection while the trace is on."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def of(self, verb: str) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith(verb)]

    @property
    def commits(self) -> int:
        return len(self.of("COMMIT"))

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith(_WRITES)]


_WRITES = ("UPDATE", "INSERT", "DELETE", "BEGIN", "COMMIT")


@contextlib.asynccontextmanager
async def traced() -> AsyncIterator[Trace]:
    connection: Any = connections.get("default")._connection
    raw = connection._conn  # aiosqlite's connection: the sqlite3 one inside, used by its thread
    trace = Trace()
    await connection._execute(raw.set_trace_callback, trace.statements.append)
    try:
        yield trace
    finally:
        await connection._execute(raw.set_trace_callback, None)


def sqlite_only(dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("statements are counted with SQLite's trace callback")


class NoCoze:
    async def start(self, link: str, run_id: str) -> StartedRun:
        raise AssertionError("no run is started here")


def service() -> TaskService:
    return TaskService(NoCoze(), callback_secret=SECRET, max_retries=2, timeout_seconds=60)


def callback(run_id: str, status: str = "success") -> CallbackReport:
    return CallbackReport(
        run_id=run_id,
        token=callback_token(SECRET, run_id),
        status=status,  # type: ignore[arg-type]
        text="the words of the video",
    )


# --- outcomes ---------------------------------------------------------------------------------


async def test_a_batch_of_outcomes_costs_one_update_each_and_one_commit(open_db: str) -> None:
    sqlite_only(open_db)
    tasks = await new_tasks(5)
    async with traced() as trace:
        results = await repository.apply_outcomes([(t.run_id, TEXT, True) for t in tasks])
    assert results == [ApplyResult.APPLIED] * 5
    settles = [s for s in trace.of("UPDATE") if "RETURNING" in s]
    assert len(settles) == 5
    # The batch's first successes: the tasks marked counted, the user's count raised, once.
    assert len(trace.of("UPDATE")) == 5 + 2
    assert trace.commits == 1
    assert not trace.of("SELECT")  # nothing is read to settle an open task


async def test_a_duplicate_callback_is_answered_from_one_read_with_no_write(open_db: str) -> None:
    sqlite_only(open_db)
    (task,) = await new_tasks(1)
    tasks = service()
    assert await tasks.handle_callback(callback(task.run_id)) is CallbackReceipt.ACCEPTED
    batches = tasks.outcomes.batches
    async with traced() as trace:
        assert await tasks.handle_callback(callback(task.run_id)) is CallbackReceipt.ACCEPTED
    assert trace.writes == []
    assert len(trace.statements) == 1
    assert tasks.outcomes.batches == batches
    assert (await User.get(id=7)).extract_count == 1


async def test_concurrent_callbacks_share_commits(open_db: str) -> None:
    sqlite_only(open_db)
    tasks = await new_tasks(20)
    service_ = service()
    async with traced() as trace:
        receipts = await asyncio.gather(
            *(service_.handle_callback(callback(t.run_id)) for t in tasks)
        )
    assert receipts == [CallbackReceipt.ACCEPTED] * 20
    assert trace.commits < 20 / 2
    assert {t.state for t in await Task.all()} == {TaskState.COMPLETED}


@pytest.mark.postgres
async def test_the_settling_statement_answers_alike_on_both_databases(open_db: str) -> None:
    first, again, failing, old = await new_tasks(4)
    # `again` succeeded once before and was retried: its second success is not counted.
    await Task.filter(id=again.id).update(counted=True)
    await Task.filter(id=old.id).update(state=TaskState.FAILED)
    await repository.begin_retry(
        task_id=old.id,
        user_id=7,
        new_run_id="run-old-retried",
        max_retries=2,
        expires_at=now(),
    )
    failure = Outcome(succeeded=False, error_kind="workflow_failed", error_detail="no speech")
    results = await repository.apply_outcomes(
        [
            (first.run_id, Outcome(succeeded=True, text="one", trimmed=True), True),
            (again.run_id, TEXT, False),
            (failing.run_id, failure, True),
            ("never-stored", TEXT, True),
            (old.run_id, TEXT, True),  # an attempt a retry has replaced
            (first.run_id, TEXT, True),  # a duplicate within the batch
        ]
    )
    assert results == [
        ApplyResult.APPLIED,
        ApplyResult.APPLIED,
        ApplyResult.APPLIED,
        ApplyResult.UNKNOWN,
        ApplyResult.IGNORED,
        ApplyResult.IGNORED,
    ]
    stored = {t.id: t for t in await Task.all()}
    done = stored[first.id]
    assert (done.state, done.result_text, done.output_trimmed, done.progress) == (
        TaskState.COMPLETED,
        "one",
        True,
        100,
    )
    assert done.callback_received and done.counted and done.text_made_at is not None
    assert not done.notification_sent and done.completed_at is not None
    assert stored[again.id].state == TaskState.COMPLETED and not stored[again.id].callback_received
    failed = stored[failing.id]
    assert (failed.state, failed.error_kind, failed.error_detail) == (
        TaskState.FAILED,
        "workflow_failed",
        "no speech",
    )
    assert not failed.result_text  # none stored
    assert not failed.counted and failed.progress == 0
    assert stored[old.id].state == TaskState.PENDING  # the retried attempt waits for its run
    user = await User.get(id=7)
    assert user.extract_count == 1 and user.last_extract_at == done.completed_at


@pytest.mark.postgres
async def test_first_successes_of_one_user_in_one_batch_all_count(open_db: str) -> None:
    tasks = await new_tasks(3)
    others = await new_tasks(1, user_id=8)
    results = await repository.apply_outcomes([(t.run_id, TEXT, True) for t in tasks + others])
    assert results == [ApplyResult.APPLIED] * 4
    assert (await User.get(id=7)).extract_count == 3
    assert (await User.get(id=8)).extract_count == 1


@pytest.mark.postgres
async def test_settled_already_tells_open_settled_old_and_unknown_runs_apart(open_db: str) -> None:
    running, settled = await new_tasks(2)
    await repository.apply_outcomes([(settled.run_id, TEXT, True)])
    await repository.begin_retry(
        task_id=settled.id, user_id=7, new_run_id="run-new", max_retries=2, expires_at=now()
    )
    assert await repository.settled_already(running.run_id) is None
    assert await repository.settled_already(settled.run_id) is ApplyResult.IGNORED
    assert await repository.settled_already("run-new") is None  # pending: open
    assert await repository.settled_already("never-stored") is ApplyResult.UNKNOWN
    await repository.apply_outcomes([(running.run_id, TEXT, True)])
    assert await repository.settled_already(running.run_id) is ApplyResult.IGNORED


@pytest.mark.postgres
async def test_progress_is_recorded_only_for_a_running_attempt(open_db: str) -> None:
    running, settled = await new_tasks(2)
    await repository.apply_outcomes([(settled.run_id, TEXT, True)])
    assert await repository.update_progress(running.run_id, 40) is ApplyResult.APPLIED
    assert await repository.update_progress(settled.run_id, 40) is ApplyResult.IGNORED
    assert await repository.update_progress("never-stored", 40) is ApplyResult.UNKNOWN
    assert (await Task.get(id=running.id)).progress == 40
    assert (await Task.get(id=settled.id)).progress == 100


# --- deliveries -------------------------------------------------------------------------------


async def settled_tasks(count: int) -> list[Task]:
    tasks = await new_tasks(count, separate_chats=True)
    await repository.apply_outcomes([(t.run_id, TEXT, True) for t in tasks])
    return [await Task.get(id=t.id) for t in tasks]


async def test_texts_of_many_chats_share_their_statements_and_commits(open_db: str) -> None:
    sqlite_only(open_db)
    tasks = await settled_tasks(6)
    outbox = Outbox(lease=ANN)
    async with traced() as trace:
        taken = await outbox.take_chats([t.chat_id for t in tasks])
        claimed = await asyncio.gather(*(outbox.claim_for_send(t) for t in tasks))
        assert all(c is not None and c.send_started_at is not None for c in claimed)
        done = await asyncio.gather(*(outbox.delivered(t, release_chat=True) for t in tasks))
    assert taken == {t.chat_id for t in tasks} and all(done)
    # All the chats in one INSERT; the claims (each marking its send in flight) in one UPDATE
    # per transaction, the delivered marks in one UPDATE and the chats let go in one DELETE
    # per transaction; the first caller's write goes alone, the five others join the next.
    assert len(trace.of("INSERT")) == 1
    assert len(trace.of("UPDATE")) <= 2 + 2 and len(trace.of("DELETE")) <= 2
    assert trace.commits <= 1 + 2 + 2
    assert not trace.of("SELECT")
    assert await ChatLease.all().count() == 0
    assert all(t.notification_sent for t in await Task.all())


async def test_one_text_costs_three_statements_in_two_commits(open_db: str) -> None:
    sqlite_only(open_db)
    (task,) = await settled_tasks(1)
    outbox = Outbox(lease=ANN)
    await outbox.take_chats([task.chat_id])
    async with traced() as trace:
        claimed = await outbox.claim_for_send(task)
        assert claimed is not None
        assert await outbox.delivered(claimed, release_chat=True)
    verbs = [s.split()[0].upper() for s in trace.statements]
    assert verbs == ["BEGIN", "UPDATE", "COMMIT", "BEGIN", "UPDATE", "DELETE", "COMMIT"]


@pytest.mark.postgres
async def test_marks_of_one_batch_answer_each_outcome(open_db: str) -> None:
    first, second = await settled_tasks(2)
    refs = [OutcomeRef.of(first), OutcomeRef.of(second)]
    stale = OutcomeRef(first.id, "run-replaced", TaskState.COMPLETED)
    claimed = await repository.claim_for_send_many([refs[1], stale, refs[0]])
    assert [c.id if c else None for c in claimed] == [second.id, None, first.id]
    marked = await repository.mark_delivered_many(
        [(stale, None, False), (refs[0], 2, True), (refs[1], None, False), (refs[1], None, False)]
    )
    assert marked == [False, True, True, False]
    stored = {t.id: t for t in await Task.all()}
    assert stored[first.id].delivered_parts == 2 and stored[first.id].send_timed_out
    assert stored[second.id].delivered_parts == 0 and not stored[second.id].send_timed_out
    assert all(t.notification_sent and t.delivery_attempts == 1 for t in stored.values())


@pytest.mark.postgres
async def test_the_claim_marks_the_send_and_flags_one_found_marked(open_db: str) -> None:
    (task,) = await settled_tasks(1)
    outbox = Outbox(lease=ANN)
    claimed = await outbox.claim_for_send(task)
    assert claimed is not None
    assert claimed.send_started_at is not None and not claimed.resent_after_crash
    assert (claimed.id, claimed.run_id, claimed.result_text) == (task.id, task.run_id, TEXT.text)
    # The process died with the send on the wire; after the restart it is claimed again.
    again = await outbox.claim_for_send(task)
    assert again is not None and again.resent_after_crash
    assert await outbox.delivered(again)
    assert await outbox.claim_for_send(task) is None  # delivered: nothing to claim
    stored = await Task.get(id=task.id)
    assert stored.notification_sent and stored.send_started_at is None
    assert stored.delivery_attempts == 1 and stored.resent_after_crash


@pytest.mark.postgres
async def test_the_claim_names_the_attempt(open_db: str) -> None:
    (task,) = await settled_tasks(1)
    other_outcome = OutcomeRef(task.id, task.run_id, TaskState.FAILED)
    assert await repository.claim_for_send(other_outcome) is None
    assert (await Task.get(id=task.id)).send_started_at is None


@pytest.mark.postgres
async def test_the_delivered_mark_keeps_a_timed_out_send_and_the_pieces(open_db: str) -> None:
    (task,) = await settled_tasks(1)
    ref = OutcomeRef.of(task)
    await repository.part_sent(ref, 1, timed_out=True)
    assert await repository.mark_delivered(ref, parts=3)
    stored = await Task.get(id=task.id)
    assert stored.send_timed_out and stored.delivered_parts == 3 and stored.notified_at
    assert not await repository.mark_delivered(ref)  # once only


@pytest.mark.postgres
async def test_chats_are_taken_together_but_never_from_a_live_holder(open_db: str) -> None:
    assert await claims.take_chats([1, 2], BOB) == {1, 2}
    await ChatLease.filter(chat_id=2).update(until=now())  # Bob's claim on chat 2 ran out
    assert await claims.take_chats([1, 2, 3, 3], ANN) == {2, 3}
    assert await claims.take_chats([2, 3], ANN) == {2, 3}  # Ann's own: renewed
    holders = {lease.chat_id: lease.holder for lease in await ChatLease.all()}
    assert holders == {1: BOB.holder, 2: ANN.holder, 3: ANN.holder}
    assert await claims.take_chats([], ANN) == set()


@pytest.mark.postgres
async def test_the_outbox_scan_leaves_out_queued_tasks_and_other_instances_chats(
    open_db: str,
) -> None:
    first, second, third = await settled_tasks(3)
    assert await claims.take_chats([third.chat_id], BOB) == {third.chat_id}
    queued = await repository.outcomes_to_queue(now(), 10, exclude=[first.id], lease=ANN)
    assert [(t.id, t.run_id, t.state, t.chat_id) for t in queued] == [
        (second.id, second.run_id, TaskState.COMPLETED, second.chat_id)
    ]
    assert queued[0].send_started_at is None and queued[0].delivery_attempts == 0
    whole = await repository.undelivered_outcomes(now(), 10, exclude=[first.id], lease=ANN)
    assert [t.id for t in whole] == [t.id for t in queued]

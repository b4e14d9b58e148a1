"""Claims across instances (storage.claims), on a real database: two instances, Ann's and Bob's,
share it. Whatever one of them holds, the other neither sees as due nor can claim, until the
holder lets it go or its lease runs out; an instance restarted under its own name takes its
claims back at once. On SQLite and, when TEST_DATABASE_URL names a server, on PostgreSQL (with
its advisory lock: tests/databases.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest
from tortoise.timezone import now

from storage import ChatLease, InboxUpdate, Task, TaskState, claims, repository
from storage.claims import Lease
from storage.locks import AdvisoryLock, libpq_url, lock_key
from storage.repository import ApplyResult, Outcome
from tasks.access import AccessList
from tasks.outcome_writer import OutcomeWriter
from tasks.preferences import Preferences

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]

LEASE = 30.0
ANN = Lease("ann:8080", LEASE)
BOB = Lease("bob:8080", LEASE)
_numbers = itertools.count(1)


async def new_tasks(count: int = 1, *, chat_id: int = 7) -> list[Task]:
    await repository.upsert_user(chat_id, "User", None)
    links = [(f"https://v.douyin.com/{n}/", f"run-{n}") for n in itertools.islice(_numbers, count)]
    return await repository.create_tasks(
        user_id=chat_id, chat_id=chat_id, request_message_id=next(_numbers), links=links
    )


def later(seconds: float = 900.0) -> dt.datetime:
    return now() + dt.timedelta(seconds=seconds)


async def run_out(lease: Lease) -> None:
    """Let the lease's claims run out, as when their instance died."""
    await Task.filter(lease_holder=lease.holder).update(lease_until=now())
    await ChatLease.filter(holder=lease.holder).update(until=now())
    await InboxUpdate.filter(claimed_by=lease.holder).update(claim_until=now())


# --- starting runs --------------------------------------------------------------------------


async def test_a_run_one_instance_starts_is_neither_due_nor_claimable_for_another(
    open_db: str,
) -> None:
    first, second = await new_tasks(2)
    assert await repository.claim_start(first.id, first.run_id, later(), ANN)
    assert [t.id for t in await repository.pending_tasks(lease=BOB)] == [second.id]
    assert not await repository.claim_start(first.id, first.run_id, later(), BOB)
    assert await repository.starts_under_way(BOB) == 1  # Ann's start counts for Bob's limit
    assert await repository.starts_under_way(ANN) == 0  # Ann counts her own in memory


async def test_a_dead_instances_start_is_taken_over_when_its_lease_runs_out(open_db: str) -> None:
    (task,) = await new_tasks()
    assert await repository.claim_start(task.id, task.run_id, later(), ANN)
    await run_out(ANN)
    assert [t.id for t in await repository.pending_tasks(lease=BOB)] == [task.id]
    assert await repository.claim_start(task.id, task.run_id, later(), BOB)
    assert not await repository.claim_start(task.id, task.run_id, later(), ANN)


async def test_an_instance_restarted_under_its_name_takes_its_claims_back_at_once(
    open_db: str,
) -> None:
    (task,) = await new_tasks()
    assert await repository.claim_start(task.id, task.run_id, later(), ANN)
    restarted = Lease(ANN.holder, LEASE)
    assert [t.id for t in await repository.pending_tasks(lease=restarted)] == [task.id]
    assert await repository.claim_start(task.id, task.run_id, later(), restarted)


async def test_the_start_claim_is_let_go_when_the_run_starts_and_renewed_while_it_lasts(
    open_db: str,
) -> None:
    (task,) = await new_tasks()
    assert await repository.claim_start(task.id, task.run_id, later(), ANN)
    before = (await Task.get(id=task.id)).lease_until
    await asyncio.sleep(0.01)
    await claims.renew_tasks([task.id], ANN)
    await claims.renew_tasks([task.id], BOB)  # not Bob's: nothing changes
    renewed = await Task.get(id=task.id)
    assert renewed.lease_holder == ANN.holder
    assert before is not None and renewed.lease_until is not None
    assert renewed.lease_until > before
    assert await repository.mark_started(
        task_id=task.id, run_id=task.run_id, execute_id="e1", next_check_at=now()
    )
    started = await Task.get(id=task.id)
    assert (started.state, started.lease_holder, started.lease_until) == (
        TaskState.PROCESSING,
        None,
        None,
    )


# --- run-history checks and deadlines -------------------------------------------------------


async def _running(count: int = 1) -> list[Task]:
    tasks = await new_tasks(count)
    for task in tasks:
        assert await repository.claim_start(task.id, task.run_id, later(), ANN)
        await repository.mark_started(
            task_id=task.id, run_id=task.run_id, execute_id=f"e{task.id}", next_check_at=now()
        )
    return tasks


async def test_a_check_one_instance_makes_is_not_made_by_another(open_db: str) -> None:
    first, second = await _running(2)
    assert await repository.claim_check(first.id, first.run_id, ANN)
    due = await repository.due_for_check(now(), limit=10, lease=BOB)
    assert [t.id for t in due] == [second.id]
    assert not await repository.claim_check(first.id, first.run_id, BOB)
    # Checked and still running: the next check is anyone's again.
    await repository.schedule_check(task_id=first.id, run_id=first.run_id, next_check_at=now())
    assert await repository.claim_check(first.id, first.run_id, BOB)


async def test_an_outcome_lets_go_of_a_check_under_way(open_db: str) -> None:
    (task,) = await _running()
    assert await repository.claim_check(task.id, task.run_id, ANN)
    result = await repository.apply_outcome(
        task.run_id, Outcome(succeeded=True, text="text"), via_callback=True
    )
    assert result is ApplyResult.APPLIED
    settled = await Task.get(id=task.id)
    assert (settled.lease_holder, settled.lease_until) == (None, None)


async def test_an_overdue_task_another_instance_is_checking_is_left_to_it(open_db: str) -> None:
    (task,) = await _running()
    await Task.filter(id=task.id).update(expires_at=now())
    assert await repository.claim_check(task.id, task.run_id, ANN)
    assert await repository.overdue_tasks(now(), BOB) == []
    assert [t.id for t in await repository.overdue_tasks(now(), ANN)] == [task.id]


# --- delivery -------------------------------------------------------------------------------


async def _settled(chat_id: int, count: int = 1) -> list[Task]:
    tasks = await new_tasks(count, chat_id=chat_id)
    for task in tasks:
        await repository.apply_outcome(
            task.run_id, Outcome(succeeded=True, text="text"), via_callback=True
        )
    return tasks


async def test_one_instance_at_a_time_delivers_to_a_chat(open_db: str) -> None:
    ann_chat = await _settled(7, 2)
    bob_chat = await _settled(8)
    assert await claims.take_chat(7, ANN)
    assert not await claims.take_chat(7, BOB)
    assert await claims.take_chat(7, ANN)  # Ann again (a new worker): still hers
    due = await repository.undelivered_outcomes(now(), 10, lease=BOB)
    assert [t.id for t in due] == [bob_chat[0].id]
    due = await repository.undelivered_outcomes(now(), 10, lease=ANN)
    assert [t.id for t in due] == [t.id for t in ann_chat + bob_chat]
    await claims.release_chat(7, BOB)  # not Bob's to release
    assert not await claims.take_chat(7, BOB)
    await claims.release_chat(7, ANN)
    assert await claims.take_chat(7, BOB)


async def test_a_dead_instances_chat_is_taken_over_when_its_lease_runs_out(open_db: str) -> None:
    assert await claims.take_chat(7, ANN)
    await claims.renew_chats([7], ANN)
    assert not await claims.take_chat(7, BOB)
    await run_out(ANN)
    assert await claims.take_chat(7, BOB)
    await claims.renew_chats([7], ANN)  # Ann is gone: her renewal takes nothing back
    assert (await ChatLease.get(chat_id=7)).holder == BOB.holder


async def test_a_progress_edit_is_made_once(open_db: str) -> None:
    (task,) = await _running()
    since = now()
    assert await repository.claim_progress_edit(task.id, task.run_id, since)
    assert not await repository.claim_progress_edit(task.id, task.run_id, since)


# --- stored Telegram updates ----------------------------------------------------------------


async def test_an_update_is_handled_by_the_instance_that_stored_it_or_after_its_lease(
    open_db: str,
) -> None:
    await repository.store_updates([(1, '{"update_id": 1}'), (2, '{"update_id": 2}')], ANN)
    assert await claims.claim_unhandled_updates(BOB, 10) == []
    # Ann handles update 1 and dies with update 2.
    await repository.mark_update_handled(1)
    await run_out(ANN)
    taken = await claims.claim_unhandled_updates(BOB, 10)
    assert [u.update_id for u in taken] == [2]
    assert await claims.claim_unhandled_updates(ANN, 10) == []  # Bob's now
    # Bob, restarted, takes his own back at once, but not the ones he is handling now.
    assert await claims.claim_unhandled_updates(BOB, 10, exclude={2}) == []
    assert [u.update_id for u in await claims.claim_unhandled_updates(BOB, 10)] == [2]


async def test_an_update_stored_without_a_claim_is_anyones(open_db: str) -> None:
    await repository.store_updates([(5, '{"update_id": 5}')])
    assert [u.update_id for u in await claims.claim_unhandled_updates(BOB, 10)] == [5]


async def test_a_clean_stop_frees_everything_at_once(open_db: str) -> None:
    (task,) = await new_tasks()
    assert await repository.claim_start(task.id, task.run_id, later(), ANN)
    assert await claims.take_chat(7, ANN)
    await repository.store_updates([(9, '{"update_id": 9}')], ANN)
    await claims.release_all(ANN)
    assert await repository.claim_start(task.id, task.run_id, later(), BOB)
    assert await claims.take_chat(7, BOB)
    assert [u.update_id for u in await claims.claim_unhandled_updates(BOB, 10)] == [9]


# --- the polling lock (PostgreSQL) ----------------------------------------------------------


async def test_the_lock_url_and_key() -> None:
    url = "asyncpg://bot:pw@db.internal:5433/link2text?minsize=1&maxsize=10"
    assert libpq_url(url) == "postgresql://bot:pw@db.internal:5433/link2text"
    assert lock_key("a") == lock_key("a") != lock_key("b")
    assert -(2**63) <= lock_key("link2text:telegram-polling") < 2**63


@pytest.mark.postgres_only
async def test_one_instance_holds_the_polling_lock_and_another_takes_it_when_it_dies(
    database_url: str,
) -> None:
    ann, bob = AdvisoryLock(database_url, "poll"), AdvisoryLock(database_url, "poll")
    try:
        assert await ann.try_acquire()
        assert not await bob.try_acquire()
        assert await ann.still_held()
        # Ann's process dies: its connection ends, and the server lets the lock go.
        ann._connection.terminate()
        assert not await ann.still_held()
        # The server notices the closed connection within moments; Bob's next try has it.
        for _ in range(100):
            if await bob.try_acquire():
                break
            await asyncio.sleep(0.05)
        assert bob.held
        assert not await ann.try_acquire()
        await bob.release()
        assert await ann.try_acquire()
    finally:
        await ann.release()
        await bob.release()


# --- what one instance changes, the other sees ----------------------------------------------


async def test_a_language_chosen_through_one_instance_is_read_by_the_other(open_db: str) -> None:
    await repository.upsert_user(31, "Li", None, "en")
    ann_sees, bob_sees = Preferences(max_age_seconds=0.05), Preferences(max_age_seconds=0.05)
    assert (await ann_sees.of(31)).language is None
    await bob_sees.choose_language(31, "Li", "zh")
    assert (await ann_sees.of(31)).language is None  # as read a moment ago
    await asyncio.sleep(0.1)
    assert (await ann_sees.of(31)).language == "zh"


async def test_a_user_blocked_through_one_instance_is_blocked_by_the_other(open_db: str) -> None:
    ann_sees, bob_sees = AccessList(admins=[1]), AccessList(admins=[1])
    await ann_sees.load()
    reloading = asyncio.create_task(ann_sees.keep_loaded(0.02))
    try:
        assert await bob_sees.block(32, by=1)
        for _ in range(100):
            if ann_sees.is_blocked(32):
                break
            await asyncio.sleep(0.02)
        assert ann_sees.is_blocked(32)
        assert await bob_sees.unblock(32, by=1)
        for _ in range(100):
            if not ann_sees.is_blocked(32):
                break
            await asyncio.sleep(0.02)
        assert not ann_sees.is_blocked(32)
    finally:
        reloading.cancel()
        await asyncio.gather(reloading, return_exceptions=True)


# --- outcomes written together --------------------------------------------------------------


async def test_an_outcome_the_database_refuses_fails_alone_and_its_batch_is_stored(
    open_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, bad, last = await new_tasks(3)
    real_apply = repository.apply_outcomes

    async def refuse_bad(items: list[tuple[str, Outcome, bool]]) -> list[ApplyResult]:
        if any(run_id == bad.run_id for run_id, _, _ in items):
            raise ValueError("the database refuses this row")
        return await real_apply(items)

    monkeypatch.setattr(repository, "apply_outcomes", refuse_bad)
    writer = OutcomeWriter()
    text = Outcome(succeeded=True, text="words")
    results = await asyncio.gather(
        *(writer.apply(t.run_id, text, via_callback=True) for t in (first, bad, last)),
        return_exceptions=True,
    )
    assert results[0] is ApplyResult.APPLIED and results[2] is ApplyResult.APPLIED
    assert isinstance(results[1], ValueError)
    states = {t.id: t.state for t in await Task.all()}
    assert states == {
        first.id: TaskState.COMPLETED,
        bad.id: TaskState.PENDING,
        last.id: TaskState.COMPLETED,
    }

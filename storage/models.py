"""Tortoise models: users, tasks, and every attempt (run) of a task."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class TaskState(StrEnum):
    PENDING = "pending"  # stored, Coze run not started yet (or a retry not started yet)
    PROCESSING = "processing"  # Coze accepted the run; waiting for its outcome
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"


#: States whose outcome is told to the user and that Retry may restart.
FINISHED_STATES = (TaskState.COMPLETED, TaskState.FAILED, TaskState.TIMEOUT)
#: States in which an outcome of the current run may still be applied. TIMEOUT is here on
#: purpose: a result that arrives after the deadline is still delivered (better late than lost).
OPEN_STATES = (TaskState.PENDING, TaskState.PROCESSING, TaskState.TIMEOUT)


# Model docstrings become table comments in Tortoise's DDL, and its SQLite script runner splits
# on ";": keep the descriptions in comments instead.


# A Telegram user: the primary key is the Telegram user id.
class User(Model):
    id = fields.BigIntField(primary_key=True, generated=False)
    username = fields.CharField(max_length=64, null=True)
    first_name = fields.CharField(max_length=128, default="")
    extract_count = fields.IntField(default=0)
    last_extract_at = fields.DatetimeField(null=True)
    # The language Telegram reports for the user, and the one they chose with /lang (which
    # wins); "en" or "zh".
    language_code = fields.CharField(max_length=35, null=True)
    language = fields.CharField(max_length=8, null=True)
    # /settings: texts always as a .txt document.
    always_as_file = fields.BooleanField(default=False, db_default=False)
    # The user's own task numbers: their first task is their #1 (numbers are never reused).
    last_task_number = fields.IntField(default=0, db_default=0)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "users"


# One link to turn into text. run_id names the current attempt.
class Task(Model):
    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="tasks", on_delete=fields.CASCADE
    )
    user_id: int
    # The task's number among its user's tasks (#1, #2, ...): what the user sees and types.
    user_number = fields.IntField(null=True)
    chat_id = fields.BigIntField()
    request_message_id = fields.BigIntField()
    ack_message_id = fields.BigIntField(null=True)
    input_url = fields.CharField(max_length=2048)
    # Which video the link shows (platform and id, or the normalised link): a text extracted
    # for the same video recently is answered from the database (see tasks.videos).
    video_key = fields.CharField(max_length=255, null=True)
    # Answered from an earlier extraction (that task's id), with no Coze run, and when that
    # text was made.
    reused_from = fields.IntField(null=True)
    text_made_at = fields.DatetimeField(null=True)
    run_id = fields.CharField(max_length=64, unique=True)
    state = fields.CharEnumField(TaskState, max_length=16, default=TaskState.PENDING, db_index=True)
    execute_id = fields.CharField(max_length=64, null=True)
    result_text = fields.TextField(null=True)
    # Why a task failed, as a fixed code the bot turns into words (see tasks.errors);
    # error_detail is for the operator's log and /status, never the raw token or a traceback.
    error_kind = fields.CharField(max_length=32, null=True)
    error_detail = fields.TextField(null=True)
    progress = fields.IntField(default=0)
    retry_count = fields.IntField(default=0)
    callback_received = fields.BooleanField(default=False)
    # A retried task that succeeds again is still one extraction in the user's count.
    counted = fields.BooleanField(default=False)
    # Columns added after the first schema carry a database default too (db_default), so that
    # the migration can add them to a table that already has rows.
    # Reconciliation: when the current run is next checked against Coze's run history, and
    # how many checks it has had (the pause between checks doubles).
    next_check_at = fields.DatetimeField(null=True)
    checks = fields.IntField(default=0, db_default=0)
    notification_sent = fields.BooleanField(default=False, db_index=True)
    undeliverable = fields.BooleanField(default=False)
    delivery_attempts = fields.IntField(default=0)
    # Delivery bookkeeping (the outbox). delivered_parts: pieces of a long text already sent,
    # so a resumed delivery never sends them again. payload_level: how far the payload has
    # been changed after Telegram refused it (BadRequest). deliver_after: backoff after a
    # network fault. send_started_at: set while a send is in flight, so a send interrupted
    # by a crash is known at restart. send_timed_out / resent_after_crash: the two ways a
    # text may have reached the user twice, kept so they can be counted.
    delivered_parts = fields.IntField(default=0, db_default=0)
    payload_level = fields.IntField(default=0, db_default=0)
    deliver_after = fields.DatetimeField(null=True)
    send_started_at = fields.DatetimeField(null=True)
    send_timed_out = fields.BooleanField(default=False, db_default=False)
    resent_after_crash = fields.BooleanField(default=False, db_default=False)
    # Progress shown in the acknowledgement message, and when it was last edited (throttle).
    progress_shown = fields.IntField(default=0, db_default=0)
    progress_edited_at = fields.DatetimeField(null=True)
    # Coze said the run's output was cut (is_output_trimmed): the user is told.
    output_trimmed = fields.BooleanField(default=False, db_default=False)
    # Claims across instances (tasks.claims): the instance starting or checking the current
    # run, and until when. Past `lease_until` (the holder died) another instance takes over.
    lease_holder = fields.CharField(max_length=64, null=True)
    lease_until = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    started_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    expires_at = fields.DatetimeField(null=True)
    notified_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tasks"
        unique_together = (("user_id", "user_number"),)
        indexes = (("video_key", "state"),)


# Every attempt ever started, so a callback for an old attempt is known (and ignored).
class TaskRun(Model):
    id = fields.IntField(primary_key=True)
    run_id = fields.CharField(max_length=64, unique=True)
    task: fields.ForeignKeyRelation[Task] = fields.ForeignKeyField(
        "models.Task", related_name="runs", on_delete=fields.CASCADE
    )
    task_id: int
    execute_id = fields.CharField(max_length=64, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "task_runs"


# One Coze run spent by a user (a first attempt or a retry), for the daily quota. Kept apart
# from the tasks so that deleting tasks (/delete, /forget) does not give the quota back; it
# holds no link and no text.
class RunSpent(Model):
    id = fields.IntField(primary_key=True)
    user_id = fields.BigIntField()
    spent_at = fields.DatetimeField()

    class Meta:
        table = "runs_spent"
        indexes = (("user_id", "spent_at"),)


# A Telegram update taken from getUpdates, stored before the next getUpdates call confirms it
# (after which Telegram forgets it), and marked handled once its handler has run. An update
# taken but not handled when the process died is handled at the next start; the newest
# update_id also tells the next start where to resume polling.
class InboxUpdate(Model):
    update_id = fields.BigIntField(primary_key=True, generated=False)
    payload = fields.TextField()
    handled = fields.BooleanField(default=False)
    # Set aside: it could not be read or handled (it is also marked handled, so never replayed).
    poisoned = fields.BooleanField(default=False, db_default=False)
    # The instance handling it, until when: an update its instance died with is handled by
    # another once the claim has run out.
    claimed_by = fields.CharField(max_length=64, null=True)
    claim_until = fields.DatetimeField(null=True)
    received_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "inbox_updates"


# The instance that delivers to a chat, until when: one chat's outcomes go out one by one, in
# order, from one instance at a time. Past `until` (the holder died) another instance takes over.
class ChatLease(Model):
    chat_id = fields.BigIntField(primary_key=True, generated=False)
    holder = fields.CharField(max_length=64)
    until = fields.DatetimeField()

    class Meta:
        table = "chat_leases"


# Who is blocked, as changed by admins with /block and /unblock. A row overrides the config's
# access.blocked_users for that user (so /unblock of a user the config blocks sticks).
class UserAccess(Model):
    user_id = fields.BigIntField(primary_key=True, generated=False)
    blocked = fields.BooleanField()
    changed_by = fields.BigIntField()
    changed_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "user_access"

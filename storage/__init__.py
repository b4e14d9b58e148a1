"""Storage: Tortoise models, migrations, and the task state machine."""

from storage.db import DatabaseOpenError, open_database, ping
from storage.models import (
    FINISHED_STATES,
    OPEN_STATES,
    ChatLease,
    InboxUpdate,
    RunSpent,
    Task,
    TaskRun,
    TaskState,
    User,
    UserAccess,
)

__all__ = [
    "FINISHED_STATES",
    "OPEN_STATES",
    "ChatLease",
    "DatabaseOpenError",
    "InboxUpdate",
    "RunSpent",
    "Task",
    "TaskRun",
    "TaskState",
    "User",
    "UserAccess",
    "open_database",
    "ping",
]

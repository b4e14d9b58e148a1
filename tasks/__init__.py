"""The task logic: what happens to a link from the moment it is accepted until its outcome."""

from tasks.inbox import Inbox
from tasks.outbox import Outbox
from tasks.reconciler import Reconciler
from tasks.service import (
    CallbackReceipt,
    CallbackReport,
    FailureKind,
    StartPolicy,
    TaskService,
    UserInfo,
    WorkflowClient,
    WorkflowStarter,
)

__all__ = [
    "CallbackReceipt",
    "CallbackReport",
    "FailureKind",
    "Inbox",
    "Outbox",
    "Reconciler",
    "StartPolicy",
    "TaskService",
    "UserInfo",
    "WorkflowClient",
    "WorkflowStarter",
]

"""The task logic: what happens to a link from the moment it is accepted until its outcome."""

from tasks.access import AccessList
from tasks.inbox import Inbox
from tasks.outbox import Outbox
from tasks.quotas import Allowance, QuotaRefusal, Quotas
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
    "AccessList",
    "Allowance",
    "CallbackReceipt",
    "CallbackReport",
    "FailureKind",
    "Inbox",
    "Outbox",
    "QuotaRefusal",
    "Quotas",
    "Reconciler",
    "StartPolicy",
    "TaskService",
    "UserInfo",
    "WorkflowClient",
    "WorkflowStarter",
]

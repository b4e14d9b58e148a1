"""The task logic: what happens to a link from the moment it is accepted until its outcome."""

from tasks.service import (
    CallbackReceipt,
    CallbackReport,
    FailureKind,
    TaskService,
    UserInfo,
    WorkflowStarter,
)

__all__ = [
    "CallbackReceipt",
    "CallbackReport",
    "FailureKind",
    "TaskService",
    "UserInfo",
    "WorkflowStarter",
]

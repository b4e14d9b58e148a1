"""The Coze client: start a workflow run for a link, read a run's outcome."""

from coze.client import (
    CozeCallError,
    CozeWorkflowClient,
    RunHistory,
    RunStatus,
    StartedRun,
    callback_token,
    parse_output,
)

__all__ = [
    "CozeCallError",
    "CozeWorkflowClient",
    "RunHistory",
    "RunStatus",
    "StartedRun",
    "callback_token",
    "parse_output",
]

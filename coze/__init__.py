"""The Coze client: start a workflow run for a link, read a run's outcome."""

import warnings

from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]

# cozepy imports authlib.jose, which announces its own deprecation on every start (authlib
# installs an "always" filter for it). Nothing of ours uses it: keep the log clean.
warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)

from coze.client import (  # noqa: E402 - after the warning filter
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

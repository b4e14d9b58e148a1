"""The task a log line is about, without every call passing it along.

Work on one task (starting its run, checking its run history, applying its callback,
delivering its outcome) runs inside `about(task_id, run_id)`; every record logged meanwhile, in
that asyncio task, carries `task_id` and `run_id` (the JSON log format shows them). A context
variable, so concurrent work on other tasks never mixes them up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[tuple[int | None, str | None] | None] = ContextVar("task", default=None)


@contextmanager
def about(task_id: int | None, run_id: str | None) -> Iterator[None]:
    token = _current.set((task_id, run_id))
    try:
        yield
    finally:
        _current.reset(token)


class TaskContext(logging.Filter):
    """Adds `task_id` and `run_id` to a record logged inside `about(...)`."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        if current is not None:
            record.task_id, record.run_id = current
        return True

"""`python -m simulators.counted_bot --config PATH`: `python -m bot`, counting SQL statements.

For the benchmark only. Every SQLite connection the bot opens gets a trace callback, which
SQLite calls for each statement it runs (BEGIN and COMMIT included); on SIGUSR1 the count so
far is written to the file named by ``LINK2TEXT_STATEMENTS_FILE``. Nothing else changes: the
bot is the real one, started the real way. The file's first line is the count of statements
and, after a space, of reads (SELECTs).

With ``LINK2TEXT_STATEMENTS_DETAIL=1`` (for finding where statements go; it costs CPU) the file
also counts each statement's shape, its literals replaced by ``?``, most frequent first.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path
from types import FrameType
from typing import Any

STATEMENTS_FILE_ENV = "LINK2TEXT_STATEMENTS_FILE"
DETAIL_ENV = "LINK2TEXT_STATEMENTS_DETAIL"
_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def count_statements(report_to: Path, *, detail: bool = False) -> None:
    counter = itertools.count()  # next() is atomic under the GIL: aiosqlite's thread counts
    read_counter = itertools.count()
    seen = [0, 0]  # statements, reads (SELECTs)
    shapes: collections.Counter[str] = collections.Counter()
    connect = sqlite3.connect

    def _trace(statement: str) -> None:
        seen[0] = next(counter) + 1
        if statement[:6].upper() == "SELECT":
            seen[1] = next(read_counter) + 1
        if detail:
            shape = _LITERALS.sub("?", statement)
            # Long column lists: the start names the table, the end its WHERE.
            shapes[shape if len(shape) <= 300 else f"{shape[:80]} ... {shape[-220:]}"] += 1

    def _counted_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.set_trace_callback(_trace)
        return connection

    def _report(_signum: int, _frame: FrameType | None) -> None:
        temporary = report_to.with_suffix(".tmp")
        report = f"{seen[0]} {seen[1]}"
        if detail:
            report += "\n" + json.dumps(shapes.most_common(), indent=1, ensure_ascii=False)
        temporary.write_text(report, encoding="utf-8")
        temporary.replace(report_to)  # the reader never sees half a number

    sqlite3.connect = _counted_connect  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, _report)


def main() -> int:
    count_statements(
        Path(os.environ[STATEMENTS_FILE_ENV]), detail=os.environ.get(DETAIL_ENV) == "1"
    )
    from bot.__main__ import main as bot_main  # after the patch: nothing connected before it

    return bot_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

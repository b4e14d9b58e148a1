"""Cleaning text that comes from outside (a workflow's output, its error message)."""

from __future__ import annotations

import re

# C0 and C1 control characters except tab, line feed and carriage return; PostgreSQL cannot
# store NUL at all, and the others only garble what a user reads.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Lone UTF-16 surrogates (from a JSON "\ud83d" escape) cannot be encoded as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` without control characters (tab and line breaks kept) or lone surrogates."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))

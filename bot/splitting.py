"""Splitting long text into Telegram messages without losing or reordering a character.

Telegram counts a message's length in UTF-16 code units (4096 at most): a character outside
the Basic Multilingual Plane (most emoji) counts twice.
"""

from __future__ import annotations

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` UTF-16 units whose concatenation is exactly `text`.

    Cuts prefer, in order: a paragraph break, a line break, a sentence end, a space; a piece is
    cut mid-word only when it has none of these.
    """
    pieces: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        head = _prefix_within(rest, limit)
        cut = _best_cut(head)
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _prefix_within(text: str, limit: int) -> str:
    """The longest prefix of `text` that fits in `limit` UTF-16 units (never halves a char)."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


_SEPARATORS = ("\n\n", "\n", "。", "！", "？", ". ", "! ", "? ", "，", ", ", " ")


def _best_cut(head: str) -> int:
    """Where to cut `head` (a cut keeps the separator with the piece before it)."""
    # Only cut in the second half, so pieces stay reasonably full.
    floor = len(head) // 2
    for separator in _SEPARATORS:
        at = head.rfind(separator)
        if at >= floor:
            return at + len(separator)
    return len(head)


def preview(text: str, limit: int) -> str:
    """The start of `text` within `limit` UTF-16 units, marked with an ellipsis if cut."""
    if utf16_len(text) <= limit:
        return text
    head = _prefix_within(text, limit - 1)
    cut = _best_cut(head)
    return head[:cut].rstrip() + "…"

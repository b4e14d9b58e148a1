"""Why a request was refused: an HTTP status and a short reason of our own words.

The reason is written by this package, never copied from the request, so it can go to the log
and back to the client as it is.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the webhook refuses with a 4xx; `reason` holds none of the request's bytes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason

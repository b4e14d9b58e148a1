"""`make fuzz` in small: a few hundred random requests at the running bot's webhook, then the
fuzz's own checks (no 5xx, only answers the contract allows, the database exactly as the valid
callbacks make it, a clean log). The full run is `make fuzz` (3000 requests)."""

from __future__ import annotations

import pytest

from simulators import fuzz


def test_a_small_fuzz_finds_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz.main(["--requests", "400", "--seed", "7"]) == 0
    table = capsys.readouterr().out
    assert "0 violation(s), OK" in table
    assert "p50 ms" in table and "database: 17 tasks as planned" in table

"""The benchmark still runs (tiny sizes): it measures, so it asserts no figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_and_reports_every_figure() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators.bench",
            "--users=3",
            "--links-per-user=1",
            "--sequential-links=2",
            "--pause=0.05",
            "--workflow-seconds=0.01",
            "--timeout=30",
            "--flood-messages=30",
            "--flood-others=2",
            "--backlog-users=5",
            "--mode-links=3",
            "--mode-seconds=0.4",
            "--poll-interval=0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    for figure in (
        "one-user: 2 links",
        "burst: 3 links",
        "paste -> text",
        "peak RSS",
        "Coze runs: 5",
        "flood: one user sends 30 messages",
        "others' paste -> acknowledgement",
        "backlog: 5 users paste at once",
        "of the budget; 429s: 0",
        "callback completion -> text",
        "poll     completion -> text",
        "Coze calls per task",
    ):
        assert figure in done.stdout, done.stdout


def test_the_callback_benchmark_runs_and_every_callback_is_answered() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "simulators.callback_bench", "--tasks=40", "--connections", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "callbacks: 40 runs in flight, each called back once, then again"
    for label in ("first", "duplicate", "no database"):
        (line,) = [line for line in lines if f"4 connections, {label}" in line]
        assert "/s" in line and "p99" in line
        assert "not 200" not in line  # every callback answered 200

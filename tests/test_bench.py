"""`make bench` still runs (tiny sizes): it measures, so it asserts no timings, only that every
scenario completed and that its counts add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_every_scenario_and_its_counts_add_up(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators.bench",
            "--callback-tasks=30",
            "--connections",
            "4",
            "--users-per-second=10",
            "--steady-seconds=0.5",
            "--backlog-texts=8",
            "--drain-users-per-second=4",
            "--mode-links=2",
            "--mode-seconds=0.3",
            "--poll-interval=0.1",
            "--tasks=20",
            "--tasks-per-second=100",
            "--flood-messages=10",
            "--flood-others=2",
            f"--json={figures}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(figures.read_text())["results"]
    callbacks = results["callbacks_4"]
    assert callbacks["runs"] == 30
    # Every callback was answered 200, and each cost the bot measurable work.
    assert callbacks["first_not_200"] == callbacks["duplicate_not_200"] == 0
    assert callbacks["ceiling_not_200"] == 0
    assert callbacks["statements_first"] > callbacks["statements_duplicate"] > 0
    assert callbacks["cpu_ms_first"] > 0
    assert results["steady"]["users"] == 5
    assert results["drain"]["backlog"] == 8 and results["drain"]["newcomers"] >= 1
    assert results["drain"]["calls"] >= 8  # each waiting text is a call
    assert results["steady"]["telegram_429"] == results["drain"]["telegram_429"] == 0
    # One start per task in callback mode; in poll mode at least one history read more.
    assert results["callback"]["coze_calls_per_task"] == 1.0
    assert results["poll"]["coze_calls_per_task"] >= 2.0
    many = results["many"]
    assert many["tasks"] == 20 and many["peak_rss_mb"] > 0 and many["database_bytes_per_task"] > 0
    assert many["statements_per_task"] > 0
    assert results["flood"]["flooder_runs"] >= 1
    # The table shows each figure beside its target.
    for row in (
        "| callbacks/s, first outcomes, 4 connections |",
        "| paste -> acknowledgement, new users at a steady rate |",
        "| paste -> acknowledgement while 8 texts drain |",
        "| Telegram budget used while the backlog drains |",
        "| 429s from a Bot API enforcing 30 calls/s | 0 | 0 | met |",
        "| run completed -> text sent, poll mode |",
        "| Coze calls per task, callback / poll mode |",
        "| peak RSS of the bot process (20 tasks) |",
        "| paste -> acknowledgement of others while one user floods |",
    ):
        assert row in done.stdout, done.stdout

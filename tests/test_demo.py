"""`python -m simulators.demo` (what `make demo` runs): the whole conversation, nothing left."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.coze import default_outcome_for
from simulators.demo import LOST_CALLBACK_URL, VIDEO_URL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT = 60.0


def _bot_processes(config: str) -> list[str]:
    """Live processes (not zombies) whose command line names this config file."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if config in cmdline and "-m bot" in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


@pytest.mark.timeout(DEMO_TIMEOUT + 30)
def test_demo_plays_the_conversation_and_cleans_up() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "simulators.demo"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",
    )
    try:
        output, _ = demo.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        demo.send_signal(signal.SIGTERM)  # the demo cleans up as on Ctrl-C
        try:
            output, _ = demo.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            demo.kill()
            output, _ = demo.communicate()
        pytest.fail(f"the demo did not finish within {DEMO_TIMEOUT:g} s:\n{output}")

    started = re.search(r"bot process (\d+) started: python -m bot --config (\S+)", output)
    assert started, output
    config = started.group(2)
    assert _bot_processes(config) == [], output
    assert not Path(config).parent.exists(), "the temporary directory was left behind"

    assert demo.returncode == 0, output
    assert "bot: Got it! Task #1 is on its way." in output
    extracted = default_outcome_for(VIDEO_URL).text.strip().splitlines()[0]
    # The text, the text of the retry, and the earlier text given to the second user.
    assert output.count(extracted) == 3, output
    assert output.count("[Retry]") >= 2, output
    assert "bot: (toast) Retrying task #1" in output
    assert "Your tasks (1-2 of 2, newest first):" in output
    # A user whose Telegram is in Chinese reads Chinese, and the video pasted earlier comes
    # from the stored text, with no Coze run (3 runs in all: the text, the retry, the lost one).
    assert "bot (to 李雷): 你好！我可以把视频链接转成文字。" in output
    assert "这个视频在" in output and "[重新提取] [以文件发送]" in output
    assert "2 texts contain “视频”:" in output
    assert re.search(r"known video -> text:\s+\d+ ms \(no Coze run\)", output), output
    assert re.search(r"Coze runs:\s+3\n", output), output
    recovered = default_outcome_for(LOST_CALLBACK_URL).text.strip().splitlines()[0]
    assert output.count(recovered) == 1, output  # from the run history: the callback was lost
    assert re.search(r"callback lost -> text:\s+\d+ ms", output), output
    assert re.search(r"secrets in bot log:\s+none\n", output), output

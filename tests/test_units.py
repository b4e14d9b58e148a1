"""Pure functions: splitting text, reading Coze's output, classifying errors."""

from __future__ import annotations

import json
import random

import httpx
import pytest
from cozepy import CozeAPIError

from bot import texts
from bot.delivery import ChatPacer
from bot.splitting import preview, split_text, utf16_len
from coze import parse_output
from coze.client import ErrorClass, classify
from storage import Task, TaskState


def test_split_text_keeps_every_character_in_order_within_the_limit() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "\n", "\n\n", "😀", "中", "。", "，", "x" * 50]
    for _ in range(30):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5_000)))
        limit = rng.choice([10, 100, 4096])
        pieces = split_text(text, limit)
        assert "".join(pieces) == text
        assert all(utf16_len(piece) <= limit for piece in pieces)
        assert all(pieces) or pieces == [""]


def test_split_text_prefers_paragraph_breaks() -> None:
    text = ("a" * 60 + "\n\n") * 3
    assert split_text(text, 100) == ["a" * 60 + "\n\n"] * 3


def test_split_text_never_halves_an_emoji() -> None:
    pieces = split_text("😀" * 5, 3)
    assert pieces == ["😀", "😀", "😀", "😀", "😀"]


def test_preview_is_cut_with_an_ellipsis_within_the_limit() -> None:
    assert preview("short", 10) == "short"
    cut = preview("word " * 100, 50)
    assert cut.endswith("…") and utf16_len(cut) <= 50


@pytest.mark.parametrize(
    ("output", "text"),
    [
        (json.dumps({"Output": json.dumps({"text": "你好"}, ensure_ascii=False)}), "你好"),
        (
            json.dumps(
                {"Output": json.dumps({"content_type": 1, "data": "纯文本", "type_for_model": 2})}
            ),
            "纯文本",
        ),
        (json.dumps({"Output": "plain words"}), "plain words"),
        (json.dumps({"Output": "null"}), ""),
        ("not json at all", "not json at all"),
        (json.dumps({"Output": json.dumps({"output": "other key"})}), "other key"),
    ],
    ids=["variables", "text-mode", "plain", "running", "not-json", "other-key"],
)
def test_parse_output_reads_every_shape(output: str, text: str) -> None:
    assert parse_output(output) == text


@pytest.mark.parametrize(
    ("error", "kind", "transient"),
    [
        (CozeAPIError(4009, "busy", "log1"), ErrorClass.BUSY, True),
        (CozeAPIError(4020, "rpm", "log1"), ErrorClass.BUSY, True),
        (CozeAPIError(5000, "internal", "log1"), ErrorClass.BUSY, True),
        (CozeAPIError(502, "<html>", "log1"), ErrorClass.BUSY, True),
        (CozeAPIError(429, "slow down", "log1"), ErrorClass.BUSY, True),
        (httpx.ConnectError("refused"), ErrorClass.BUSY, True),
        (httpx.ReadTimeout("slow"), ErrorClass.BUSY, True),
        (CozeAPIError(4100, "bad token", "log1"), ErrorClass.CONFIG, False),
        (CozeAPIError(4200, "unpublished", "log1"), ErrorClass.CONFIG, False),
        (CozeAPIError(6003, "paid plan", "log1"), ErrorClass.PLAN, False),
        (CozeAPIError(4011, "balance", "log1"), ErrorClass.QUOTA, False),
        (CozeAPIError(9999, "new", "log1"), ErrorClass.UNKNOWN, False),
    ],
)
def test_coze_errors_are_classified(error: Exception, kind: ErrorClass, transient: bool) -> None:
    classified = classify(error)
    assert (classified.kind, classified.transient) == (kind, transient)


def test_the_logid_is_kept_for_the_operator() -> None:
    assert "logid-777" in classify(CozeAPIError(4009, "busy", "logid-777")).detail


def test_secrets_are_masked_in_log_lines_and_tracebacks() -> None:
    import io
    import logging

    from bot.logs import RedactSecrets

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(("123:SECRET-TOKEN", "")))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling https://api.telegram.org/bot%s/getMe", "123:SECRET-TOKEN")
        try:
            raise RuntimeError("token 123:SECRET-TOKEN rejected")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "SECRET-TOKEN" not in output
    assert output.count("***") >= 2


def test_json_logs_are_one_object_per_line_with_secrets_masked() -> None:
    import io
    import json
    import logging

    from bot.logs import JsonLines, OneLine, RedactSecrets

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactSecrets(("123:SECRET-TOKEN",)))
    handler.addFilter(OneLine())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("task %s: two\nlines with 123:SECRET-TOKEN", 7)
        try:
            raise RuntimeError("boom 123:SECRET-TOKEN")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "test.json"
    assert first["message"] == "task 7: two\\x0alines with ***"
    assert first["time"].endswith("+00:00")
    assert "RuntimeError" in second["exception"] and "SECRET-TOKEN" not in lines[1]


def test_chat_pacer_lets_a_burst_through_then_paces() -> None:
    pacer = ChatPacer(interval=1.0, burst=3)
    for _ in range(3):
        assert pacer.wait(7, 100.0) <= 0
        pacer.take(7, 100.0)
    assert pacer.wait(7, 100.0) == pytest.approx(1.0)  # the fourth waits one interval
    assert pacer.wait(8, 100.0) <= 0  # another chat is not held up
    assert pacer.wait(7, 101.0) <= 0
    pacer.take(7, 101.0)
    assert pacer.wait(7, 101.0) == pytest.approx(1.0)
    assert pacer.wait(7, 110.0) <= 0  # after a quiet spell the burst is back


@pytest.mark.parametrize(
    ("detail", "words"),
    [
        ("Video unavailable", "The video was not found."),
        ("该视频不存在或已删除", "The video was not found."),
        ("This video is private", "The video is private or needs a login"),
        ("需要登录后查看", "The video is private or needs a login"),
        ("Platform not supported: example.org", "This site or kind of link is not supported."),
        ("download timed out", "Reading the video took too long."),
        ("something odd happened", "The video could not be turned into text."),
    ],
)
def test_a_workflow_failure_is_told_in_words_a_user_understands(detail: str, words: str) -> None:
    task = Task(state=TaskState.FAILED, error_kind="workflow_failed", error_detail=detail)
    assert texts.DEFAULT.failure_words(task).startswith(words)

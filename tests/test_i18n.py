"""The message catalogues: every message in both languages, with the same placeholders, and
the catalogues up to date with the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot import texts
from bot.i18n import LANGUAGES, LOCALES, catalogue_path, language_of

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def messages(language: str) -> list[tuple[object, object]]:
    with catalogue_path(language).open("rb") as po:
        catalog = read_po(po, locale=language)
    return [(m.id, m.string) for m in catalog if m.id]


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def test_the_template_is_up_to_date_with_the_code(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable, "-m", "babel.messages.frontend", "extract",
            "-F", str(LOCALES / "babel.cfg"), "-k", "_", "-k", "_n:1,2",
            "--no-location", "--sort-output", "--omit-header", "-o", str(fresh), ".",
        ],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    with fresh.open("rb") as new, (LOCALES / "messages.pot").open("rb") as committed:
        assert {m.id for m in read_po(new) if m.id} == {m.id for m in read_po(committed) if m.id}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_in_every_catalogue(language: str) -> None:
    with (LOCALES / "messages.pot").open("rb") as pot:
        wanted = {m.id for m in read_po(pot) if m.id}
    assert {message_id for message_id, _ in messages(language)} == wanted


def test_every_message_is_translated_to_chinese_with_the_same_placeholders() -> None:
    for message_id, translated in messages("zh"):
        ids = message_id if isinstance(message_id, tuple) else (message_id,)
        forms = translated if isinstance(translated, tuple) else (translated,)
        assert all(forms), f"not translated: {ids[0]!r}"
        for form in forms:
            assert isinstance(form, str)
            assert placeholders(form) == placeholders(ids[-1]), (ids[0], form)
            assert re.search(r"[\u4e00-\u9fff]", form) or not re.search(r"[a-z]{4}", ids[0]), (
                f"still English: {form!r}"
            )


def test_babel_finds_no_error_in_the_catalogues() -> None:
    for language in LANGUAGES:
        with catalogue_path(language).open("rb") as po:
            catalog = read_po(po, locale=language)
        problems = [(m.id, errors) for m, errors in catalog.check()]
        assert problems == [], problems


@pytest.mark.parametrize(
    ("code", "language"),
    [("zh", "zh"), ("zh-hans", "zh"), ("zh-TW", "zh"), ("zh_CN", "zh"), ("en", "en"),
     ("ru", "en"), ("", "en"), (None, "en")],
)  # fmt: skip
def test_telegram_language_codes(code: str | None, language: str) -> None:
    assert language_of(code) == language
    assert language_of(None, "zh") == "zh"


def test_a_chinese_text_reads_chinese_and_an_english_one_english() -> None:
    assert "你好" in texts.for_language("zh").start
    assert texts.for_language("en").start.startswith("Hello!")
    assert texts.for_language("xx").language == "xx"  # unknown: English texts
    assert texts.for_language("xx").start.startswith("Hello!")

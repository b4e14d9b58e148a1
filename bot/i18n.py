"""Languages: which one a user reads, and the message catalogues of each.

The catalogues are gettext .po files in bot/locales/<language>/LC_MESSAGES/messages.po, kept
with Babel's tools (`make messages` extracts the messages of bot/texts.py into
bot/locales/messages.pot and updates the .po files). They are read at start with Babel, so no
compiled .mo file is kept in the repository.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"
LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"


def language_of(language_code: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The language for Telegram's `language_code`: any Chinese (zh, zh-hans, zh-TW...) gives
    "zh", anything else "en"; no code at all gives `default`."""
    if not language_code:
        return default if default in LANGUAGES else DEFAULT_LANGUAGE
    return "zh" if language_code.lower().replace("_", "-").split("-")[0] == "zh" else "en"


def catalogue_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of `language`, compiled in memory from its .po file."""
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    with catalogue_path(language).open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)

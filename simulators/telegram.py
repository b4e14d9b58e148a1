"""A fake Telegram Bot API server for tests, the demo and the benchmark.

It speaks the wire protocol python-telegram-bot 22 uses (see /work/shared/docs/telegram.md):
``POST /bot<token>/<method>`` with form-urlencoded parameters (every non-string value JSON-encoded),
multipart for uploads, JSON bodies too; replies ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}``.

Point PTB at it with ``ApplicationBuilder().base_url(fake.api_base_url)`` or
``telegram.Bot(token, base_url=fake.api_base_url)``.

What it models, with Telegram's own error texts:
- private chats, which exist once their user has written to the bot (``user_sends``);
- groups and supergroups (ids below zero; ``-100…`` for supergroups), which exist once a member
  has written in them (``user_sends_in_group``): members' messages with mentions and replies
  (``reply_to_message`` is the replied message without its own ``reply_to_message``), service
  messages (``group_event``: members joining and leaving, pins, titles, migration to a
  supergroup, video chats, ...), messages of anonymous admins and via inline bots; other bots'
  messages are stored but never delivered (Telegram never shows a bot another bot's messages).
  The bot's privacy mode is off by default (it receives every group message, as an admin does);
  ``privacy_mode = True`` delivers only what Telegram delivers then. A group upgraded to a
  supergroup refuses sends with ``migrate_to_chat_id``, a group the bot was removed from with 403;
  a button is pressed (``user_presses``) by a member of the message's chat;
- messages, replies (``reply_parameters`` and the old ``reply_to_message_id``), inline keyboards,
  documents, edits, deletions, callback queries and their answers;
- chat actions (``sendChatAction``), checked as the Bot API server checks them and recorded per
  chat (``chat_actions``);
- the bot's profile per language: command menus per ``scope`` and ``language_code``
  (``setMyCommands``/``getMyCommands``/``deleteMyCommands``; ``commands_for``, ``menu_seen_by``),
  descriptions, short descriptions and names (``setMyDescription``... ``getMyName``;
  ``description_for``, ``short_description_for``, ``name_for``). Users carry the
  ``language_code`` they last reported (``user_sends(..., language_code=...)``) in every ``from``;
- ``getUpdates`` with offsets, limits, long polling and the 409 of a concurrent poller, and a
  webhook mode that POSTs updates to a loopback URL (``setWebhook``/``deleteWebhook``);
- entities as the server computes them (ported from TDLib's ``MessageEntity.cpp``): bot commands
  (``/cmd@bot`` included), ``@username`` mentions, URLs (with and without a scheme) and e-mail
  addresses (not hashtags, cashtags or phone numbers), offsets in UTF-16 code units; the HTML
  parse mode for the bot's own messages, with Telegram's "can't parse entities" errors
  (MarkdownV2 and Markdown are not implemented: they get a 400 that says so);
- fault injection: ``fail_next`` (an error reply instead of the call) and ``delay_next`` (the call
  is performed, then the reply is held, so a client timeout leaves the message delivered), and
  ``fault_hook`` for random faults (a ``TelegramFault`` or ``TelegramDelay`` per call). A client
  that disconnects during a held reply changes nothing: aiohttp does not cancel the handler
  (``handler_cancellation`` is off by default), so the call completes and is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import itertools
import json
import mimetypes
import re
import time
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from simulators.base import SimulatorServer

__all__ = [
    "GROUP_ANONYMOUS_BOT",
    "FakeTelegram",
    "ScopeKey",
    "SentMessage",
    "TelegramDelay",
    "TelegramFault",
    "UploadedFile",
    "find_entities",
    "utf16_len",
]

JSONDict = dict[str, Any]

MAX_TEXT_LENGTH = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_ANSWER_LENGTH = 200
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

_BLOCKED = "Forbidden: bot was blocked by the user"
GROUP_ANONYMOUS_BOT: JSONDict = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
_KICKED = "Forbidden: bot was kicked from the {type} chat"
_UPGRADED = "Bad Request: group chat was upgraded to a supergroup chat"
_CHAT_NOT_FOUND = "Bad Request: chat not found"
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
# Not Telegram's answer: the fake ports only the HTML parser (the bot sends plain text).
_UNIMPLEMENTED_PARSE_MODE = (
    "Bad Request: parse_mode {mode} is not implemented by this fake Telegram server "
    "(only HTML and plain text are)"
)
_QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"

# sendChatAction's actions as the Bot API server reads them (lower-cased first): the documented
# names, "cancel" and the old aliases it still takes, each mapped to what `chat_actions` records.
_CHAT_ACTIONS: dict[str, str] = {
    "cancel": "cancel",
    "typing": "typing",
    "upload_photo": "upload_photo",
    "record_video": "record_video",
    "upload_video": "upload_video",
    "record_voice": "record_voice",
    "record_audio": "record_voice",
    "upload_voice": "upload_voice",
    "upload_audio": "upload_voice",
    "upload_document": "upload_document",
    "choose_sticker": "choose_sticker",
    "find_location": "find_location",
    "pick_up_location": "find_location",
    "record_video_note": "record_video_note",
    "upload_video_note": "upload_video_note",
}
_WRONG_ACTION = "Bad Request: wrong parameter action in request"

# The bot's profile. Command checks are TDLib's (set_commands), then the server's; the limits of
# descriptions and names are the server's, counted here in characters (code points).
MAX_COMMANDS = 100
MAX_COMMAND_LENGTH = 32
MAX_COMMAND_DESCRIPTION_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 512
MAX_SHORT_DESCRIPTION_LENGTH = 120
MAX_NAME_LENGTH = 64
_TD_SPACE = " \t\r\n\0\v\f"  # what td::trim strips
_GLOBAL_SCOPES = frozenset(
    {"default", "all_private_chats", "all_group_chats", "all_chat_administrators"}
)
_CHAT_SCOPES = frozenset({"chat", "chat_administrators", "chat_member"})
_INVALID_LANGUAGE = "Bad Request: invalid language code specified"
# A command scope as stored: (type, chat id for the chat scopes, user id for chat_member).
ScopeKey = tuple[str, int | None, int | None]
_DEFAULT_SCOPE: ScopeKey = ("default", None, None)

# setWebhook's max_connections: 40 when not given, otherwise clamped into 1..100 (the Bot API
# server's get_integer_arg clamps rather than refuses; what is not a number counts as 0).
_DEFAULT_MAX_CONNECTIONS = 40
_MAX_CONNECTIONS_RANGE = (1, 100)


def _max_connections(raw: Any) -> int:
    if raw is None or raw == "":
        return _DEFAULT_MAX_CONNECTIONS
    try:
        value = 0 if isinstance(raw, bool) else int(raw)
    except (TypeError, ValueError):
        value = 0
    low, high = _MAX_CONNECTIONS_RANGE
    return min(max(value, low), high)


# Form fields that are strings on the wire and must not be JSON-decoded ("123" stays "123").
_STRING_FIELDS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "action",
        "business_connection_id",
        "message_effect_id",
        "secret_token",
        "ip_address",
        "document",
        "description",
        "short_description",
        "name",
        "language_code",
        "emoji",
        "title",
        "query",
        "photo",
        "sticker",
        "thumbnail",
    }
)

_METHODS = (
    "getMe",
    "logOut",
    "close",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "sendDocument",
    "editMessageText",
    "editMessageCaption",
    "editMessageReplyMarkup",
    "deleteMessage",
    "sendChatAction",
    "answerCallbackQuery",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "setMyDescription",
    "getMyDescription",
    "setMyShortDescription",
    "getMyShortDescription",
    "setMyName",
    "getMyName",
)
_CANONICAL = {name.lower(): name for name in _METHODS}
# The bot's profile methods (lower-case): set and read at start-up.
_PROFILE = frozenset(name.lower() for name in _METHODS if "My" in name)
# Start-up and polling (lower-case): exempt from both the bot-wide limit and `fault_hook`.
_START_UP = frozenset({"getupdates", "getme", "deletewebhook"}) | _PROFILE
# Calls the bot-wide limit never counts: the above plus the webhook's set-up.
_LIMIT_EXEMPT = _START_UP | {"setwebhook", "getwebhookinfo"}
# Methods `fault_hook` never applies to: the above plus callback answers.
_HOOK_EXEMPT = _START_UP | {"answercallbackquery"}


# --------------------------------------------------------------------------------------------
# Public data
# --------------------------------------------------------------------------------------------


@dataclass
class SentMessage:
    """A message the bot sent, as it stands now (edits applied)."""

    message_id: int
    chat_id: int
    text: str | None  # text, or the caption for a document (after entity parsing and trimming)
    parse_mode: str | None  # as the bot passed it; None means plain text
    reply_to_message_id: int | None
    reply_markup: dict[str, Any] | None  # the markup JSON as sent (last edit), or None
    document: bytes | None = None
    filename: str | None = None
    edits: int = 0  # how many times edited
    entities: list[dict[str, Any]] = field(default_factory=list)  # as Telegram returns them
    mime_type: str | None = None
    date: int = 0

    def buttons(self) -> list[tuple[str, str]]:
        """[(text, callback_data), ...] of the inline keyboard, row by row (callback buttons)."""
        result: list[tuple[str, str]] = []
        if not self.reply_markup:
            return result
        for row in self.reply_markup.get("inline_keyboard") or []:
            for button in row:
                if isinstance(button, dict) and "callback_data" in button:
                    result.append((str(button.get("text")), str(button["callback_data"])))
        return result


@dataclass(frozen=True)
class TelegramFault:
    """From `FakeTelegram.fault_hook`: answer this error instead of performing the call."""

    status: int
    description: str
    retry_after: int | None = None


@dataclass(frozen=True)
class TelegramDelay:
    """From `FakeTelegram.fault_hook`: hold the reply `seconds` (as `delay_next` does).

    With `before=False` the call is performed first, then the reply is held (a client that
    times out has still sent the message); `before=True` holds it before performing it.
    """

    seconds: float
    before: bool = False


@dataclass
class UploadedFile:
    """A file part of a multipart request, as it appears in `FakeTelegram.calls`."""

    filename: str | None
    content_type: str | None
    data: bytes


# --------------------------------------------------------------------------------------------
# Text helpers: UTF-16 lengths, entity detection (ported from TDLib), the HTML parse mode
# --------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's offsets and limits."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _w(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _is_space(ch: str) -> bool:
    # td::is_space, which counts the NUL terminator as space
    return ch in " \t\r\n\0\v\f"


def _is_separator(ch: str) -> bool:
    return unicodedata.category(ch).startswith("Z") or ch in "\t\n\v\f\r\x85"


def _is_word_character(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN" or ch == "_"


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _is_url_unicode_symbol(ch: str) -> bool:
    code = ord(ch)
    if 0x2000 <= code <= 0x206F:  # General Punctuation: ZWNJ, ZWJ and dashes only
        return code in (0x200C, 0x200D) or 0x2010 <= code <= 0x2015
    return not _is_separator(ch)


def _is_url_path_symbol(ch: str) -> bool:
    if ch in '\n<>"\xab\xbb':
        return False
    return _is_url_unicode_symbol(ch)


def _is_protocol_symbol(ch: str) -> bool:
    if ord(ch) < 0x80:
        return _is_ascii_alnum(ch) or ch in "+-"
    return not _is_separator(ch)


def _is_user_data_symbol(ch: str) -> bool:
    if ch in "\n/[]{}()'`<>\"@\xab\xbb":
        return False
    return _is_url_unicode_symbol(ch)


def _is_domain_symbol(ch: str) -> bool:
    if ord(ch) < 0xC0:
        return ch == "." or _is_ascii_alnum(ch) or ch in "_-~"
    return _is_url_unicode_symbol(ch)


_BAD_PATH_END = ".:;,('?!`"

# A subset of TDLib's list of TLDs that make a link without a scheme: every country code plus
# the common generic ones. A bare "host.tld" with another TLD is not a link (with a scheme it is).
_COMMON_TLD_NAMES = (
    "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br "
    "bs bt bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz "
    "ec ee eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu "
    "gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr "
    "kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt "
    "mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps "
    "pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm sn so sr ss st su sv sx sy "
    "sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu "
    "wf ws ye yt za zm zw "
    "com net org info biz edu gov mil int name pro aero asia cat coop jobs mobi museum tel "
    "travel xxx app dev ai page blog shop store online site top xyz club vip live link click "
    "tech cloud website space fun icu art wiki news video one world today email design "
    "digital network media studio games social group life work ltd inc llc global plus run "
    "bot chat zone tools software services center company agency academy expert guru ninja "
    "rocks solutions systems support host hosting photo photos pics pictures movie music "
    "dating love red blue pink black gold moe lol wtf xin wang ren shouji taobao tmall baidu "
    "weibo sohu sina youtube google goog amazon apple microsoft yandex netflix mov zip new "
    "meme nyc london berlin moscow tokyo paris download stream watch review science party "
    "date win bid trade men buzz bond cyou cfd sbs quest beauty fit golf cafe food bar pub "
    "church charity foundation ngo ong "
    "中国 中國 公司 网络 网址 网站 在线 手机 香港 台湾 台灣 рф онлайн сайт рус укр бел"
)
_COMMON_TLDS = frozenset(_COMMON_TLD_NAMES.split())


def _is_common_tld(tld: str) -> bool:
    lowered = tld.lower()
    if lowered != tld and lowered[1:] == tld[1:]:
        return False  # only the first letter is upper-case: TDLib refuses these
    return lowered in _COMMON_TLDS


def _match_urls(s: str) -> list[tuple[int, int]]:
    """TDLib's match_urls, on code points: candidate (begin, end) spans."""
    result: list[tuple[int, int]] = []
    begin = 0
    end = len(s)
    while True:
        dot = s.find(".", begin)
        if dot < 0 or dot + 1 == end:
            break
        if s[dot + 1] == " ":
            begin = dot + 2
            continue
        domain_begin = dot
        while domain_begin != begin:
            domain_begin -= 1
            if not _is_domain_symbol(s[domain_begin]):
                domain_begin += 1
                break
        last_at = -1
        domain_end = dot
        while domain_end != end:
            ch = s[domain_end]
            if ch == "@":
                last_at = domain_end
            elif not _is_domain_symbol(ch):
                break
            domain_end += 1
        if last_at >= 0:
            while domain_begin != begin:
                domain_begin -= 1
                if not _is_user_data_symbol(s[domain_begin]):
                    domain_begin += 1
                    break
        url_end = domain_end
        if url_end != end and s[url_end] == ":":
            port_end = url_end + 1
            while port_end != end and "0" <= s[port_end] <= "9":
                port_end += 1
            port_begin = url_end + 1
            while port_begin != port_end and s[port_begin] == "0":
                port_begin += 1
            if (
                port_begin != port_end
                and port_end - port_begin <= 5
                and int(s[port_begin:port_end]) <= 65535
            ):
                url_end = port_end
        if url_end != end and s[url_end] in "/?#":
            path_end = url_end + 1
            while path_end != end and _is_url_path_symbol(s[path_end]):
                path_end += 1
            while path_end > url_end + 1 and s[path_end - 1] in _BAD_PATH_END:
                path_end -= 1
            if s[url_end] == "/" or path_end > url_end + 1:
                url_end = path_end
        while url_end > dot + 1 and s[url_end - 1] == ".":
            url_end -= 1

        is_bad = False
        url_begin = domain_begin
        if url_begin != begin and s[url_begin - 1] == "@":
            if last_at >= 0:
                is_bad = True
            user_begin = url_begin - 1
            while user_begin != begin:
                user_begin -= 1
                if not _is_user_data_symbol(s[user_begin]):
                    user_begin += 1
                    break
            if user_begin == url_begin - 1:
                is_bad = True
            url_begin = user_begin
        if url_begin != begin:
            prefix = s[begin:url_begin]
            if len(prefix.encode("utf-8", "surrogatepass")) >= 6 and prefix.endswith("://"):
                protocol_begin = url_begin - 3
                while protocol_begin != begin:
                    protocol_begin -= 1
                    if not _is_protocol_symbol(s[protocol_begin]):
                        protocol_begin += 1
                        break
                protocol = s[protocol_begin : url_begin - 3].lower()
                if protocol.endswith("http") and protocol != "shttp":
                    url_begin -= 7
                elif protocol.endswith("https"):
                    url_begin -= 8
                elif protocol.endswith("ftp") and protocol not in ("tftp", "sftp"):
                    url_begin -= 6
                else:
                    is_bad = True
            else:
                prev = s[url_begin - 1]
                if _is_word_character(prev) or prev in "/#@":
                    is_bad = True

        if not is_bad:
            if url_end > dot + 1:
                result.append((url_begin, url_end))
            while url_end != end and s[url_end] == ".":
                url_end += 1
        else:
            while s[url_end - 1] != ".":
                url_end -= 1
        if url_end <= dot:
            url_end = dot + 1
        begin = url_end
    return result


def _is_email_address(s: str) -> bool:
    user, sep, domain = s.partition("@")
    if not sep or not domain or "@" in domain:
        return False
    parts = re.split(r"[.+]", user)
    if len(parts) >= 12 or any(len(p) >= 27 for p in parts[:-1]):
        return False
    if not parts[-1] or len(parts[-1]) >= 36:
        return False
    if not all(re.fullmatch(r"[A-Za-z0-9_-]*", p) for p in parts):
        return False
    labels = domain.split(".")
    if len(labels) <= 1 or len(labels) > 7:
        return False
    tld = labels.pop()
    if not (2 <= len(tld) <= 8) or not re.fullmatch(r"[A-Za-z]+", tld):
        return False
    return all(
        0 < len(label) < 31
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", label) is not None
        and _is_ascii_alnum(label[-1])
        for label in labels
    )


def _fix_url(url: str) -> str:
    """TDLib's fix_url: the URL (maybe shortened) or "" when it is not a link."""
    full = url
    has_protocol = False
    rest = url
    if url[:8].lower().startswith(("http://", "https://", "ftp://")):
        rest = rest[rest.find(":") + 3 :]
        has_protocol = True
    cuts = [len(rest)] + [p for p in (rest.find("/"), rest.find("?"), rest.find("#")) if p >= 0]
    domain_end = min(cuts)
    domain = rest[:domain_end]
    path = rest[domain_end:]
    at = domain.find("@")
    if at >= 0:
        domain = domain[at + 1 :]
    colon = domain.rfind(":")
    if colon >= 0:
        domain = domain[:colon]
    if domain.lower() == "teiegram.org":
        return ""

    balance = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    path_pos = 0
    while path_pos < len(path):
        ch = path[path_pos]
        if ch in balance:
            balance[ch] += 1
        elif ch in closing:
            balance[closing[ch]] -= 1
        if min(balance.values()) < 0:
            break
        path_pos += 1
    while path_pos > 0 and path[path_pos - 1] in _BAD_PATH_END:
        path_pos -= 1
    full = full[: len(full) - (len(path) - path_pos)]

    d = domain.encode("utf-8", "surrogatepass")
    prev = 0
    part_count = 0
    has_non_digit = False
    is_ipv4 = True
    for i in range(len(d) + 1):
        if i == len(d) or d[i] == ord("."):
            size = i - prev
            if size == 0 or size >= 64 or d[i - 1] == ord("-"):
                return ""
            if is_ipv4:
                if size > 3:
                    is_ipv4 = False
                if size == 3 and (
                    d[prev] >= ord("3")
                    or (
                        d[prev] == ord("2")
                        and (
                            d[prev + 1] >= ord("6")
                            or (d[prev + 1] == ord("5") and d[prev + 2] >= ord("6"))
                        )
                    )
                ):
                    is_ipv4 = False
                if d[prev] == ord("0") and size >= 2:
                    is_ipv4 = False
            part_count += 1
            if i != len(d):
                prev = i + 1
        elif not ord("0") <= d[i] <= ord("9"):
            is_ipv4 = False
            has_non_digit = True
    if part_count == 1:
        return ""
    if is_ipv4 and part_count == 4:
        return full
    if not has_non_digit:
        return ""
    tld = d[prev:].decode("utf-8", "replace")
    if len(tld) <= 1:
        return ""
    if tld.startswith("xn--"):
        if len(tld) <= 5 or not all(_is_ascii_alnum(c) for c in tld[4:]):
            return ""
    else:
        if "_" in tld or "-" in tld:
            return ""
        if not has_protocol and not _is_common_tld(tld):
            return ""
    k = prev - 1
    while k > 0:
        k -= 1
        if d[k] == ord("_"):
            return ""
        if d[k] == ord("."):
            break
    return full


def _match_bot_commands(s: str) -> list[tuple[int, int]]:
    """TDLib's match_bot_commands: /command or /command@botname, not inside a word."""
    result: list[tuple[int, int]] = []
    end = len(s)
    ptr = 0
    while True:
        ptr = s.find("/", ptr)
        if ptr < 0:
            break
        if ptr != 0:
            prev = s[ptr - 1]
            if _is_word_character(prev) or prev in "/<>":
                ptr += 1
                continue
        command_begin = ptr
        ptr += 1
        while ptr != end and (_is_ascii_alnum(s[ptr]) or s[ptr] == "_"):
            ptr += 1
        command_end = ptr
        if not 1 <= command_end - command_begin - 1 <= 64:
            continue
        if ptr != end and s[ptr] == "@":
            ptr += 1
            mention_begin = ptr
            while ptr != end and (_is_ascii_alnum(s[ptr]) or s[ptr] == "_"):
                ptr += 1
            if not 3 <= ptr - mention_begin <= 32:
                continue
            command_end = ptr
        if ptr != end and (_is_word_character(s[ptr]) or s[ptr] in "/<>"):
            continue
        result.append((command_begin, command_end))
    return result


# TDLib's get_valid_short_usernames: the only mentions shorter than 5 characters.
_VALID_SHORT_USERNAMES = frozenset(
    {"gif", "wiki", "vid", "bing", "pic", "bold", "imdb", "coub", "like", "vote"}
)


def _match_mentions(s: str) -> list[tuple[int, int]]:
    """TDLib's find_mentions: @username (2-32 of A-Z a-z 0-9 _), not glued to a word.

    A word character before the "@" (an e-mail address) or right after the name (also CJK
    letters) makes it no mention; names under 5 characters count only if TDLib lists them.
    """
    result: list[tuple[int, int]] = []
    end = len(s)
    ptr = 0
    while True:
        ptr = s.find("@", ptr)
        if ptr < 0:
            break
        if ptr != 0 and _is_word_character(s[ptr - 1]):
            ptr += 1
            continue
        ptr += 1
        name_begin = ptr
        while ptr != end and (_is_ascii_alnum(s[ptr]) or s[ptr] == "_"):
            ptr += 1
        size = ptr - name_begin
        if not 2 <= size <= 32:
            continue
        if ptr != end and _is_word_character(s[ptr]):
            continue
        if size < 5 and s[name_begin:ptr] not in _VALID_SHORT_USERNAMES:
            continue
        result.append((name_begin - 1, ptr))
    return result


_PRIORITY = {
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
    "code": 20,
    "pre": 11,
    "text_link": 49,
    "text_mention": 49,
    "blockquote": 0,
    "expandable_blockquote": 0,
}


def _sort_key(entity: JSONDict) -> tuple[int, int, int]:
    priority = _PRIORITY.get(entity["type"], 50)
    if entity["type"] == "pre" and entity.get("language"):
        priority = 10
    return (int(entity["offset"]), -int(entity["length"]), priority)


def _to_utf16_entities(text: str, spans: list[tuple[int, int, str]]) -> list[JSONDict]:
    """Code-point spans -> Bot API entities with UTF-16 offsets, intersecting ones removed."""
    prefix = [0]
    for ch in text:
        prefix.append(prefix[-1] + _w(ch))
    entities: list[JSONDict] = [
        {"offset": prefix[b], "length": prefix[e] - prefix[b], "type": kind}
        for b, e, kind in spans
        if e > b
    ]
    entities.sort(key=_sort_key)
    kept: list[JSONDict] = []
    last_end = 0
    for entity in entities:
        if entity["offset"] >= last_end:
            kept.append(entity)
            last_end = entity["offset"] + entity["length"]
    return kept


def find_entities(text: str) -> list[JSONDict]:
    """The entities Telegram's server finds in plain text: mention, bot_command, url and email.

    Offsets and lengths are in UTF-16 code units, as in the Bot API. Where two overlap, the one
    that starts first (then the longer) is kept, as TDLib does.
    """
    spans: list[tuple[int, int, str]] = [(b, e, "mention") for b, e in _match_mentions(text)]
    spans.extend((b, e, "bot_command") for b, e in _match_bot_commands(text))
    for b, e in _match_urls(text):
        candidate = text[b:e]
        if _is_email_address(candidate):
            spans.append((b, e, "email"))
        elif candidate.startswith("mailto:") and _is_email_address(candidate[7:]):
            spans.append((b + 7, e, "email"))
        else:
            fixed = _fix_url(candidate)
            if fixed:
                spans.append((b, b + len(fixed), "url"))
    return _to_utf16_entities(text, spans)


class _ParseError(Exception):
    """A parse-mode error; str() is TDLib's message."""


def _check_link(url: str) -> str:
    """Roughly TDLib's get_checked_link: "" for an unusable link, else the normalised URL."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return ""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    if match is None or (match.group(1).lower() in ("http", "https") and "://" not in url):
        if match is not None:
            return ""
        url = "http://" + url
        scheme = "http"
    else:
        scheme = match.group(1).lower()
    if scheme in ("http", "https", "ftp"):
        parts = urlsplit(url)
        if not parts.netloc:
            return ""
        if not parts.path and not parts.query and not parts.fragment:
            url += "/"
        return url
    if scheme in ("tg", "ton", "mailto"):
        return url
    return ""


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """TDLib's decode_html_entity: (character, position after it) or None."""
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    end = pos + 1
    code = 0
    if at(pos + 1) == "#":
        end += 1
        if at(pos + 2) == "x":
            end += 1
            while at(end) in "0123456789abcdefABCDEF" and at(end) != "\0":
                code = code * 16 + int(at(end), 16)
                end += 1
        else:
            while "0" <= at(end) <= "9":
                code = code * 10 + int(at(end))
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
    else:
        while at(end).isascii() and at(end).isalpha():
            end += 1
        name = text[pos + 1 : end]
        named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
        if name not in named:
            return None
        code = ord(named[name])
    if at(end) == ";":
        end += 1
    try:
        return chr(code), end
    except ValueError:
        return None


_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)


def _parse_html(text: str) -> tuple[str, list[JSONDict]]:
    """TDLib's parse_html: (plain text, entities) or _ParseError with Telegram's message."""
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else "\0"

    def bo(k: int) -> int:
        return _byte_offset(text, k)

    out: list[str] = []
    u16 = 0
    entities: list[JSONDict] = []
    stack: list[tuple[str, str, int, int]] = []  # tag, argument, UTF-16 offset, len(out)
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                ch, i = decoded
                out.append(ch)
                u16 += _w(ch)
                continue
        if c != "<":
            out.append(c)
            u16 += _w(c)
            i += 1
            continue
        begin = i
        i += 1
        if at(i) != "/":
            while not _is_space(at(i)) and at(i) != ">":
                i += 1
            if at(i) == "\0":
                raise _ParseError(f"Unclosed start tag at byte offset {bo(begin)}")
            tag = text[begin + 1 : i].lower()
            if tag not in _HTML_TAGS:
                raise _ParseError(f'Unsupported start tag "{tag}" at byte offset {bo(begin)}')
            argument = ""
            while at(i) != ">":
                while at(i) != "\0" and _is_space(at(i)):
                    i += 1
                if at(i) == ">":
                    break
                attr_begin = i
                while not _is_space(at(i)) and at(i) not in "=>":
                    i += 1
                attr = text[attr_begin:i]
                if not attr:
                    raise _ParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {bo(begin)}'
                    )
                while at(i) != "\0" and _is_space(at(i)):
                    i += 1
                if at(i) != "=":
                    if tag == "blockquote" and attr == "expandable":
                        argument = "1"
                        continue
                    raise _ParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {bo(begin)}'
                    )
                i += 1
                while at(i) != "\0" and _is_space(at(i)):
                    i += 1
                if at(i) == "\0":
                    raise _ParseError(f'Unclosed start tag "{tag}" at byte offset {bo(begin)}')
                if at(i) not in "'\"":
                    token_begin = i
                    while _is_ascii_alnum(at(i)) or at(i) in ".-":
                        i += 1
                    value = text[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ">":
                        raise _ParseError(
                            f"Unexpected end of name token at byte offset {bo(token_begin)}"
                        )
                else:
                    quote = at(i)
                    i += 1
                    chars: list[str] = []
                    while at(i) != quote and at(i) != "\0":
                        if at(i) == "&":
                            decoded = _decode_html_entity(text, i)
                            if decoded is not None:
                                chars.append(decoded[0])
                                i = decoded[1]
                                continue
                        chars.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = "".join(chars)
                if at(i) == "\0":
                    raise _ParseError(f"Unclosed start tag at byte offset {bo(begin)}")
                if tag == "a" and attr == "href":
                    argument = value
                elif tag == "code" and attr == "class" and value.startswith("language-"):
                    argument = value[9:]
                elif tag == "span" and attr == "class" and value.startswith("tg-"):
                    argument = value[3:]
                elif tag == "tg-emoji" and attr == "emoji-id":
                    argument = value
            if tag == "span" and argument != "spoiler":
                raise _ParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {bo(begin)}'
                )
            stack.append((tag, argument, u16, len(out)))
        else:
            if not stack:
                raise _ParseError(f"Unexpected end tag at byte offset {bo(begin)}")
            while not _is_space(at(i)) and at(i) != ">":
                i += 1
            end_tag = text[begin + 2 : i].lower()
            while _is_space(at(i)) and at(i) != "\0":
                i += 1
            if at(i) != ">":
                raise _ParseError(f"Unclosed end tag at byte offset {bo(begin)}")
            tag, argument, offset, out_pos = stack[-1]
            if end_tag and end_tag != tag:
                raise _ParseError(
                    f'Unmatched end tag at byte offset {bo(begin)}, expected "</{tag}>", '
                    f'found "</{end_tag}>"'
                )
            if u16 > offset:
                entity = _html_entity(tag, argument, offset, u16 - offset, out, out_pos, entities)
                if entity is not None:
                    entities.append(entity)
            stack.pop()
        i += 1
    if stack:
        raise _ParseError(f"Can't find end tag corresponding to start tag {stack[-1][0]}")
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    entities.sort(key=_sort_key)
    return "".join(out), entities


def _html_entity(
    tag: str,
    argument: str,
    offset: int,
    length: int,
    out: list[str],
    out_pos: int,
    entities: list[JSONDict],
) -> JSONDict | None:
    simple = {
        "i": "italic",
        "em": "italic",
        "b": "bold",
        "strong": "bold",
        "s": "strikethrough",
        "strike": "strikethrough",
        "del": "strikethrough",
        "u": "underline",
        "ins": "underline",
        "tg-spoiler": "spoiler",
        "span": "spoiler",
    }
    base: JSONDict = {"offset": offset, "length": length}
    if tag in simple:
        return {"type": simple[tag], **base}
    if tag == "tg-emoji":
        if not argument.isdigit() or int(argument) == 0:
            raise _ParseError("Invalid custom emoji identifier specified")
        return {"type": "custom_emoji", **base, "custom_emoji_id": argument}
    if tag == "a":
        url = _check_link(argument or "".join(out[out_pos:]))
        return {"type": "text_link", **base, "url": url} if url else None
    last = entities[-1] if entities else None
    same_range = last is not None and last["offset"] == offset and last["length"] == length
    if tag == "pre":
        if last is not None and same_range and last["type"] == "code" and last.get("language"):
            last["type"] = "pre"
            return None
        return {"type": "pre", **base}
    if tag == "code":
        if last is not None and same_range and last["type"] == "pre" and argument:
            last["language"] = argument
            return None
        entity = {"type": "code", **base}
        if argument:
            entity["language"] = argument  # dropped unless a <pre> around makes it pre+language
        return entity
    # blockquote
    return {"type": "expandable_blockquote" if argument else "blockquote", **base}


_EMPTY_CHARS = frozenset(
    "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u200c"
    "\u200d\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u202f\u205f\u2060\u3000"
    "\u2800\ufeff\u115f\u1160\u3164\uffa0"
)


def _is_empty_char(ch: str) -> bool:
    return ord(ch) <= 32 or ch in _EMPTY_CHARS


def _strip(text: str, entities: list[JSONDict]) -> tuple[str, list[JSONDict]]:
    """Telegram trims leading and trailing blank characters; entities move with the text."""
    left = 0
    while left < len(text) and _is_empty_char(text[left]):
        left += 1
    right = len(text)
    while right > left and _is_empty_char(text[right - 1]):
        right -= 1
    if left == 0 and right == len(text):
        return text, entities
    shift = utf16_len(text[:left])
    stripped = text[left:right]
    total = utf16_len(stripped)
    result: list[JSONDict] = []
    for entity in entities:
        begin = max(0, int(entity["offset"]) - shift)
        end = min(total, int(entity["offset"]) + int(entity["length"]) - shift)
        if end > begin:
            result.append({**entity, "offset": begin, "length": end - begin})
    return stripped, result


def _merge_found_entities(text: str, entities: list[JSONDict]) -> list[JSONDict]:
    """Add the server-detected entities (urls, commands) not inside code, pre or links."""
    opaque = [
        (int(e["offset"]), int(e["offset"]) + int(e["length"]))
        for e in entities
        if e["type"] in ("code", "pre", "text_link", "text_mention", "custom_emoji")
    ]
    found = [
        e
        for e in find_entities(text)
        if not any(e["offset"] < end and begin < e["offset"] + e["length"] for begin, end in opaque)
    ]
    return sorted(entities + found, key=_sort_key)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        description: str,
        retry_after: int | None = None,
        *,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id


def _json_string(obj: JSONDict, name: str) -> str:
    """td's JsonObject::get_required_string_field: a String, or a Number as written."""
    if name not in obj:
        raise ValueError(f'Can\'t find field "{name}"')
    value = obj[name]
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f'Field "{name}" must be of type String')


def _json_long(obj: JSONDict, name: str) -> int:
    """td's JsonObject::get_required_long_field: a Number, or a String holding one."""
    if name not in obj:
        raise ValueError(f'Can\'t find field "{name}"')
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f'Field "{name}" must be a Number')
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f'Field "{name}" must be a valid Number')
    return int(text)


def _parse_scope(raw: Any) -> tuple[str, str | None, int | None]:
    """A BotCommandScope as the Bot API server parses it: (type, chat_id as given, user_id).

    Chats are not looked up here. An absent or empty scope is the default scope.
    """
    if raw is None or raw == "":
        return ("default", None, None)
    if isinstance(raw, str):  # form fields are JSON-decoded on arrival: this one was not JSON
        raise _ApiError(400, "Bad Request: can't parse BotCommandScope JSON object")
    try:
        if not isinstance(raw, dict):
            raise ValueError("BotCommandScope must be an Object")
        kind = _json_string(raw, "type")
        if kind in _GLOBAL_SCOPES:
            return (kind, None, None)
        if kind not in _CHAT_SCOPES:
            raise ValueError("Unsupported type specified")
        chat_id = _json_string(raw, "chat_id")
        if not chat_id:
            raise ValueError("Empty chat_id specified")
        if kind != "chat_member":
            return (kind, chat_id, None)
        user_id = _json_long(raw, "user_id")
        if user_id <= 0:
            raise ValueError("Invalid user_id specified")
        return (kind, chat_id, user_id)
    except ValueError as exc:
        raise _ApiError(400, f"Bad Request: can't parse BotCommandScope: {exc}") from exc


def _parse_commands(raw: Any) -> list[tuple[str, str]]:
    """The ``commands`` parameter as the Bot API server parses it (absent or empty: none)."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):  # not JSON (see _parse_scope)
        raise _ApiError(400, "Bad Request: can't parse commands JSON object")
    if not isinstance(raw, list):
        raise _ApiError(400, "Bad Request: expected an Array of BotCommand")
    result: list[tuple[str, str]] = []
    for item in raw:
        try:
            if not isinstance(item, dict):
                raise ValueError("expected an Object")
            result.append((_json_string(item, "command"), _json_string(item, "description")))
        except ValueError as exc:
            raise _ApiError(400, f"Bad Request: can't parse BotCommand: {exc}") from exc
    return result


def _language_code(params: JSONDict) -> str:
    """``language_code`` of the profile methods: empty, or two lower-case letters (TDLib)."""
    raw = params.get("language_code")
    code = "" if raw is None else str(raw)
    if code and not re.fullmatch(r"[a-z]{2}", code):
        raise _ApiError(400, _INVALID_LANGUAGE)
    return code


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None
    remaining: int


@dataclass
class _Delay:
    seconds: float
    before: bool
    remaining: int


@dataclass(frozen=True)
class _Content:
    """Where a message keeps its text: a text message's text or a document's caption."""

    field: str
    entities_field: str
    limit: int  # UTF-16 code units, after entity parsing
    required: bool
    has_document: bool
    too_long_send: str
    too_long_edit: str


_TEXT = _Content(
    field="text",
    entities_field="entities",
    limit=MAX_TEXT_LENGTH,
    required=True,
    has_document=False,
    too_long_send="Bad Request: message is too long",
    too_long_edit="Bad Request: MESSAGE_TOO_LONG",
)
_CAPTION = _Content(
    field="caption",
    entities_field="caption_entities",
    limit=MAX_CAPTION_LENGTH,
    required=False,
    has_document=True,
    too_long_send="Bad Request: message caption is too long",
    too_long_edit="Bad Request: MEDIA_CAPTION_TOO_LONG",
)


@dataclass
class _Chat:
    chat: JSONDict  # the Chat object as it appears in messages
    members: dict[int, JSONDict]  # user id -> User object; a private chat's one user
    messages: dict[int, JSONDict] = field(default_factory=dict)  # every live message, as JSON
    bot_message_ids: set[int] = field(default_factory=set)
    migrated_to: int | None = None  # a group upgraded to this supergroup
    bot_removed: bool = False  # the bot was removed from the group

    @property
    def is_group(self) -> bool:
        return self.chat["type"] in ("group", "supergroup")


@dataclass
class _Query:
    user_id: int
    created: float
    answered: bool = False


Handler = Callable[[JSONDict], Awaitable[Any]]


class FakeTelegram(SimulatorServer):
    """A faithful fake of the Telegram Bot API server (private chats, groups, supergroups)."""

    def __init__(
        self, token: str = "123456:TEST-TOKEN", bot_username: str = "link2text_test_bot"
    ) -> None:
        super().__init__()
        self.token = token
        self.bot_username = bot_username
        self.bot_first_name = "Link2Text Test Bot"
        head = token.split(":", 1)[0]
        self.bot_id = int(head) if head.isdigit() else 123456
        # what the bot did
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.webhook_deliveries: list[JSONDict] = []  # updates accepted by the bot's webhook
        # knobs
        self.callback_query_ttl: float | None = 15.0  # Telegram refuses late answers
        self.webhook_retry_delay: float = 0.05  # first back-off after a failed webhook delivery
        self.webhook_timeout: float = 10.0
        # Off: the bot receives every message of its groups (as an admin, or after BotFather's
        # /setprivacy Disable). On (Telegram's default for a new bot): only commands for it
        # (bare or /cmd@this_bot), replies to its messages, its mentions, messages via it and
        # service messages. Telegram delivers a bare command only if this bot spoke last in
        # the group: this fake delivers it always (a superset).
        self.privacy_mode = False
        # Random faults: called as fault_hook(method_lower, params) for each call with no
        # queued fail_next/delay_next, except getUpdates, getMe, deleteWebhook,
        # answerCallbackQuery and the bot's profile (set/get/deleteMyCommands, set/getMyName,
        # set/getMyDescription, set/getMyShortDescription); None lets the call through unchanged.
        self.fault_hook: (
            Callable[[str, dict[str, Any]], TelegramFault | TelegramDelay | None] | None
        ) = None
        self.injected_faults: dict[str, int] = {}  # TelegramFaults from fault_hook, per method
        self.injected_delays: dict[str, int] = {}  # TelegramDelays from fault_hook, per method
        self.held_replies = 0  # replies being held right now (delay_next or TelegramDelay)
        # Telegram's bot-wide limit, enforced strictly: past this many calls in any sliding
        # second (all but polling, webhook set-up and the bot's profile), 429 retry_after 1.
        # None: no limit. `over_limit` counts those 429s.
        self.max_requests_per_second: float | None = None
        self.over_limit = 0
        self.counted_calls: list[float] = []  # when each call the limit counts was accepted
        # Called with each message the bot sends, as it is stored (the benchmark's stopwatch).
        self.on_message: Callable[[SentMessage], None] | None = None
        self._recent: deque[float] = deque()
        # state
        self._chats: dict[int, _Chat] = {}
        self._blocked: set[int] = set()
        self._languages: dict[int, str] = {}  # user id -> the language_code last reported
        self._chat_actions: dict[int, list[str]] = {}
        # the bot's profile: command lists per (scope, language_code); texts per language_code
        self._commands: dict[tuple[ScopeKey, str], list[JSONDict]] = {}
        self._descriptions: dict[str, str] = {}
        self._short_descriptions: dict[str, str] = {}
        self._names: dict[str, str] = {}  # dedicated names; "" is bot_first_name
        self._sent: dict[int, list[SentMessage]] = {}
        self._deleted: dict[int, list[SentMessage]] = {}
        self._sent_index: dict[tuple[int, int], SentMessage] = {}
        self._files: dict[str, tuple[bytes, str | None, str | None]] = {}
        self._updates: list[JSONDict] = []
        self._allowed_updates: set[str] | None = None
        self._queries: dict[str, _Query] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._delays: dict[str, deque[_Delay]] = {}
        self._message_ids = itertools.count(1)
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(4_000_000_000_000_001)
        self._file_ids = itertools.count(1)
        self._poll_token = 0
        self._webhook_url = ""
        self._webhook_secret: str | None = None
        self._webhook_max_connections = _DEFAULT_MAX_CONNECTIONS
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "logOut": self._true,
            "close": self._true,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendDocument": self._send_document,
            "editMessageText": functools.partial(self._edit_content, kind=_TEXT),
            "editMessageCaption": functools.partial(self._edit_content, kind=_CAPTION),
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "setMyDescription": functools.partial(
                self._set_profile_text,
                field="description",
                table=self._descriptions,
                limit=MAX_DESCRIPTION_LENGTH,
                too_long="Bad Request: BOT_DESC_INVALID",
            ),
            "getMyDescription": functools.partial(
                self._get_profile_text, field="description", table=self._descriptions
            ),
            "setMyShortDescription": functools.partial(
                self._set_profile_text,
                field="short_description",
                table=self._short_descriptions,
                limit=MAX_SHORT_DESCRIPTION_LENGTH,
                too_long="Bad Request: BOT_SHARETEXT_INVALID",
            ),
            "getMyShortDescription": functools.partial(
                self._get_profile_text, field="short_description", table=self._short_descriptions
            ),
            "setMyName": self._set_my_name,
            "getMyName": self._get_my_name,
        }

    # ---------------------------------------------------------------- lifecycle

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        await super().start(host, port)
        if self._webhook_url:
            self._start_webhook_loop()

    async def stop(self) -> None:
        """Release long polls and held replies at once, then stop serving."""
        self._closing.set()
        self._wake_all()
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
            self._webhook_task = None
        await super().stop()
        for task in list(self._background):
            task.cancel()

    @property
    def api_base_url(self) -> str:
        """What PTB's ``base_url`` takes: requests go to ``{api_base_url}{token}/{method}``."""
        return f"{self.url}/bot"

    # ---------------------------------------------------------------- a user acting

    def user_sends(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str = "Ann",
        username: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        as_caption: bool = False,
        auto_entities: bool = True,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """Queue an Update with a private-chat message from the user; return the message dict.

        `language_code` is the user's app language as Telegram reports it (an IETF tag such as
        ``en`` or ``zh-hans``): it goes into the ``from`` of this message and of everything the
        user does later (messages, presses, edits) until another call changes it; None keeps
        the last one reported and ``""`` clears it.
        """
        chat = self._touch_chat(user_id, first_name, username, language_code)
        if entities is None:
            entities = find_entities(text) if auto_entities else []
        message = self._compose(chat, chat.members[user_id], text, entities, as_caption=as_caption)
        self._queue_update({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def meet(self, user_id: int, first_name: str = "Ann") -> None:
        """The user's private chat with the bot exists (they started it some time ago), with
        no update queued."""
        self._touch_chat(user_id, first_name, None, None)

    def user_sends_in_group(
        self,
        group_id: int,
        user_id: int,
        text: str,
        *,
        first_name: str = "Ann",
        username: str | None = None,
        title: str | None = None,
        reply_to_message_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        as_caption: bool = False,
        auto_entities: bool = True,
        language_code: str | None = None,
        via_bot: dict[str, Any] | None = None,
        anonymous_admin: bool = False,
    ) -> dict[str, Any]:
        """Queue an Update with a member's message in a group; return the message dict.

        The group (``group_id`` < 0; ``-100…`` is a supergroup, anything else a basic group) is
        created on first use with the bot in it, titled `title`, and the user joins it silently.
        `reply_to_message_id` names a message of the group (the bot's or a member's).
        `entities` are what the user's app sends (``text_mention``, ``text_link``, ``bold``...):
        the server adds the mentions, commands and URLs it finds outside them, unless
        `auto_entities` is False. `via_bot` (a User object) marks a message sent through that
        inline bot; `anonymous_admin` sends it as the supergroup itself (``from`` is
        GroupAnonymousBot, ``sender_chat`` the group). The message is stored either way; in
        privacy mode it is delivered only if Telegram would deliver it.
        """
        chat = self._group(group_id, title)
        user = self._user_json(user_id, first_name, username, language_code)
        chat.members[user_id] = user
        sender = user
        extra: JSONDict = {}
        if anonymous_admin:
            if chat.chat["type"] != "supergroup":
                raise ValueError("anonymous admins exist in supergroups only")
            sender = dict(GROUP_ANONYMOUS_BOT)
            extra["sender_chat"] = copy.deepcopy(chat.chat)
        if via_bot is not None:
            extra["via_bot"] = copy.deepcopy(via_bot)
        if entities is None:
            found = find_entities(text) if auto_entities else []
        else:
            found = (
                _merge_found_entities(text, [dict(e) for e in entities])
                if auto_entities
                else entities
            )
        message = self._compose(
            chat,
            sender,
            text,
            found,
            as_caption=as_caption,
            reply_to=self._replied(chat, reply_to_message_id),
            extra=extra,
        )
        if self._delivers(chat, message):
            self._queue_update({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def other_bot_sends_in_group(
        self,
        group_id: int,
        bot_id: int,
        text: str,
        *,
        username: str = "other_test_bot",
        first_name: str = "Other Bot",
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Another bot posts in the group: stored (members can reply to it), never delivered.

        Telegram never shows a bot the messages of other bots, whatever its privacy mode.
        """
        chat = self._group(group_id)
        sender: JSONDict = {
            "id": bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        message = self._compose(
            chat,
            sender,
            text,
            find_entities(text),
            as_caption=False,
            reply_to=self._replied(chat, reply_to_message_id),
        )
        return copy.deepcopy(message)

    def group_event(
        self,
        group_id: int,
        kind: str,
        value: Any = None,
        *,
        user_id: int,
        first_name: str = "Ann",
        username: str | None = None,
    ) -> dict[str, Any]:
        """Queue a service message in the group, caused by `user_id`; return the message dict.

        `kind` is the service field, `value` its content (defaults as below):
        - ``new_chat_members``: user ids or User objects (the bot's id adds the bot back);
          default the user, joining by themselves. ``left_chat_member``: one, default the user
          (the bot's id removes the bot: later sends get 403 and nothing more is delivered).
          Both carry the legacy ``new_chat_participant``/``left_chat_participant`` too.
        - ``pinned_message``: the id of a message of the group (sent without its own
          ``reply_to_message``), or a message object as is (e.g. an inaccessible one).
        - ``migrate_to_chat_id``: a basic group becomes a supergroup (`value`, default
          ``-100`` and the group's number). Two updates, as Telegram sends them: this one in
          the old group, then ``migrate_from_chat_id`` in the supergroup. Sends to the old id
          get 400 with ``migrate_to_chat_id``.
        - ``new_chat_title`` (renames the group), ``new_chat_photo``, ``delete_chat_photo``,
          ``group_chat_created``, ``message_auto_delete_timer_changed``,
          ``video_chat_scheduled``/``_started``/``_ended``/``_participants_invited``,
          ``forum_topic_created`` (supergroups; the message opens a topic) and the other
          ``forum_topic_*``/``general_forum_topic_*`` kinds.
        Any other kind needs its `value`, which is sent as is.
        """
        chat = self._group(group_id)
        actor = self._user_json(user_id, first_name, username, None)
        if kind == "new_chat_members":
            joined = [self._member_json(chat, m) for m in (value or [actor])]
            fields: JSONDict = {
                "new_chat_participant": joined[0],
                "new_chat_member": joined[0],
                "new_chat_members": joined,
            }
            for member in joined:
                if member["id"] == self.bot_id:
                    chat.bot_removed = False
                else:
                    chat.members[member["id"]] = member
            chat.members.setdefault(user_id, actor)
            return self._service(chat, actor, fields)
        if kind == "left_chat_member":
            gone = self._member_json(chat, actor if value is None else value)
            message = self._service(
                chat, actor, {"left_chat_participant": gone, "left_chat_member": gone}
            )
            chat.members.pop(gone["id"], None)
            if gone["id"] == self.bot_id:
                chat.bot_removed = True
            return message
        chat.members[user_id] = actor
        if kind == "pinned_message":
            if isinstance(value, dict):
                return self._service(chat, actor, {"pinned_message": value})
            pinned = chat.messages.get(int(value)) if value is not None else None
            if pinned is None:
                raise ValueError(f"group {group_id} has no message {value} to pin")
            snapshot = copy.deepcopy(pinned)
            snapshot.pop("reply_to_message", None)
            return self._service(chat, actor, {"pinned_message": snapshot})
        if kind == "migrate_to_chat_id":
            return self._migrate(chat, actor, value)
        if kind in ("migrate_from_chat_id", "supergroup_chat_created", "channel_chat_created"):
            raise ValueError(f"{kind} is not sent on its own (see migrate_to_chat_id)")
        if kind.startswith(("forum_topic_", "general_forum_topic_")):
            if chat.chat["type"] != "supergroup":
                raise ValueError("forum topics exist in supergroups only")
            chat.chat["is_forum"] = True
        if value is None:
            value = self._service_default(kind)
        if kind == "new_chat_title":
            chat.chat["title"] = str(value)
        fields = {kind: value}
        if kind == "forum_topic_created":
            fields["is_topic_message"] = True
            return self._service(chat, actor, fields, opens_topic=True)
        return self._service(chat, actor, fields)

    def user_edits(
        self, user_id: int, message_id: int, text: str, *, auto_entities: bool = True
    ) -> dict[str, Any]:
        """Queue an ``edited_message`` Update: the user edited one of their text messages."""
        chat = self._chats.get(user_id)
        message = chat.messages.get(message_id) if chat else None
        if chat is None or message is None or message_id in chat.bot_message_ids:
            raise ValueError(f"user {user_id} has no message {message_id} to edit")
        message["text"] = text
        message.pop("entities", None)
        found = find_entities(text) if auto_entities else []
        if found:
            message["entities"] = found
        message["edit_date"] = int(time.time())
        message["from"] = self._current_user(message["from"])
        self._queue_update({"edited_message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def user_presses(self, user_id: int, message: SentMessage, callback_data: str) -> str:
        """Queue a callback_query Update from the user on that bot message; return its id.

        The user must see the message: its private chat's user, or a member of its group.
        The data is not checked against the keyboard, so tests can forge it.
        """
        chat = self._chats.get(message.chat_id)
        if chat is None or user_id not in chat.members or chat.migrated_to is not None:
            raise ValueError(f"user {user_id} cannot see message {message.message_id}")
        current = chat.messages.get(message.message_id)
        if current is None:
            raise ValueError(f"message {message.message_id} was deleted")
        query_id = str(next(self._query_ids))
        self._queries[query_id] = _Query(user_id=user_id, created=time.monotonic())
        # One chat_instance per chat (as Telegram: the same for every user of a group).
        instance = hashlib.sha256(f"{self.bot_id}:{message.chat_id}".encode()).hexdigest()[:16]
        query: JSONDict = {
            "id": query_id,
            "from": self._current_user(chat.members[user_id]),
            "message": copy.deepcopy(current),
            "chat_instance": str(int(instance, 16) % 10**19),
            "data": callback_data,
        }
        self._queue_update({"callback_query": query})
        return query_id

    def queue_update(self, payload: JSONDict) -> int:
        """Queue any update as Telegram would send it (``{"message": {...}}`` and so on, without
        the ``update_id``, which is assigned here); return its update_id. Nothing is checked, so
        tests can send shapes the helpers above do not make."""
        before = len(self._updates)
        self._queue_update(copy.deepcopy(payload))
        return int(self._updates[-1]["update_id"]) if len(self._updates) > before else -1

    def block(self, user_id: int) -> None:
        """From now on sends to this chat fail with 403 "Forbidden: bot was blocked by the user"."""
        self._blocked.add(user_id)

    def unblock(self, user_id: int) -> None:
        self._blocked.discard(user_id)

    # ---------------------------------------------------------------- what the bot did

    def messages(self, chat_id: int) -> list[SentMessage]:
        """The bot's messages in that chat that are not deleted, in send order."""
        return list(self._sent.get(chat_id, []))

    def deleted_messages(self, chat_id: int) -> list[SentMessage]:
        """The bot's messages in that chat that were deleted (by deleteMessage)."""
        return list(self._deleted.get(chat_id, []))

    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates offset (or accepted by the webhook)."""
        return len(self._updates)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """The decoded params of every call of `method` (case-insensitive), in order."""
        wanted = method.lower()
        return [params for name, params in self.calls if name.lower() == wanted]

    def chat_actions(self, chat_id: int) -> list[str]:
        """The actions the bot broadcast in that chat (sendChatAction), in order.

        Names as Telegram reads them: lower-cased, the old aliases under their current names
        (``record_audio`` is ``record_voice``, ``upload_audio`` ``upload_voice``,
        ``pick_up_location`` ``find_location``); ``cancel`` included.
        """
        return list(self._chat_actions.get(chat_id, []))

    def language_of(self, user_id: int) -> str | None:
        """The language_code the user last reported (None if none)."""
        return self._languages.get(user_id)

    # ---------------------------------------------------------------- the bot's profile

    @property
    def commands(self) -> list[dict[str, Any]]:
        """The command list of the default scope with no language (what a plain
        ``setMyCommands(commands)`` sets); assigning sets it."""
        return self.commands_for()

    @commands.setter
    def commands(self, value: list[dict[str, Any]]) -> None:
        self._store_commands(_DEFAULT_SCOPE, "", [dict(c) for c in value])

    def commands_for(
        self, language_code: str | None = None, scope: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The command list set for exactly this scope and language, as getMyCommands returns it
        (no fallback to other scopes or languages; [] if none).

        `scope` is BotCommandScope JSON (``{"type": "chat", "chat_id": 42}``...; None is the
        default scope); `language_code` None or ``""`` is the list for every language.
        """
        try:
            kind, chat_id, user_id = _parse_scope(scope)
        except _ApiError as exc:
            raise ValueError(exc.description) from exc
        key: ScopeKey = (kind, None, user_id)
        if chat_id is not None:
            if not re.fullmatch(r"-?\d+", chat_id):
                raise ValueError(f"chat_id {chat_id!r} is not a chat id")
            key = (kind, int(chat_id), user_id)
        return copy.deepcopy(self._commands.get((key, language_code or ""), []))

    def command_lists(self) -> dict[tuple[ScopeKey, str], list[dict[str, Any]]]:
        """Every command list set: {((scope type, chat id, user id), language_code): list}."""
        return copy.deepcopy(self._commands)

    def menu_seen_by(self, user_id: int, language_code: str | None = None) -> list[dict[str, Any]]:
        """The command menu the user sees in their private chat with the bot.

        Telegram's order: the first list set among the ``chat`` scope of that chat, then
        ``all_private_chats``, then ``default``, each first for the user's language, then for
        every language. The user's language is `language_code`, or else the one they last
        reported, reduced to its primary subtag (``zh-hans`` looks for ``zh``: an assumption,
        Telegram does not document how it matches an app language to the two-letter codes).
        """
        reported = language_code if language_code is not None else self._languages.get(user_id)
        primary = (reported or "").split("-", 1)[0].lower()
        languages = [primary, ""] if primary else [""]
        scopes: list[ScopeKey] = [
            ("chat", user_id, None),
            ("all_private_chats", None, None),
            _DEFAULT_SCOPE,
        ]
        for scope in scopes:
            for language in languages:
                found = self._commands.get((scope, language))
                if found:
                    return copy.deepcopy(found)
        return []

    def description_for(self, language_code: str | None = None) -> str:
        """The description set for exactly that language (None: for every language), or ""."""
        return self._descriptions.get(language_code or "", "")

    def short_description_for(self, language_code: str | None = None) -> str:
        """The short description set for exactly that language (None: every language), or ""."""
        return self._short_descriptions.get(language_code or "", "")

    def name_for(self, language_code: str | None = None) -> str:
        """The bot's name for that language: the dedicated one (or ""), or with None the name
        for every language (``bot_first_name``, which setMyName without a language changes)."""
        if not language_code:
            return self.bot_first_name
        return self._names.get(language_code, "")

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str,
        retry_after: int | None = None,
        count: int = 1,
    ) -> None:
        """The next `count` calls of `method` get that error reply and are not performed."""
        queue = self._faults.setdefault(method.lower(), deque())
        queue.append(_Fault(status, description, retry_after, count))

    def delay_next(
        self, method: str, seconds: float, count: int = 1, *, before: bool = False
    ) -> None:
        """Hold the reply of the next `count` calls of `method` for `seconds`.

        By default the call is performed first (a client that times out has still sent the
        message, as with the real Telegram); ``before=True`` holds it before it is performed.
        """
        queue = self._delays.setdefault(method.lower(), deque())
        queue.append(_Delay(seconds, before, count))

    # ---------------------------------------------------------------- change notification

    def _wake_all(self) -> None:
        old = self._wake
        self._wake = asyncio.Event()
        old.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _state_changed(self) -> None:
        """After a state change made by sync code: wake pollers and `wait_for` waiters."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is not None and running is not self._loop:
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._state_changed)
            return
        self._wake_all()
        if running is not None:
            self._spawn(self.notify())

    async def _changed_async(self) -> None:
        self._wake_all()
        await self.notify()

    def _queue_update(self, payload: JSONDict) -> None:
        kind = next(iter(payload))
        if self._allowed_updates is not None and kind not in self._allowed_updates:
            return  # Telegram does not even store update kinds the bot did not ask for
        self._updates.append({"update_id": next(self._update_ids), **payload})
        self._state_changed()

    # ---------------------------------------------------------------- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if not tail.startswith("bot") or "/" not in tail:
            return self._error(404, "Not Found")
        token, _, method = tail[3:].partition("/")
        if token != self.token:
            if re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token):
                return self._error(401, "Unauthorized")
            return self._error(404, "Not Found")
        try:
            params = await self._read_params(request)
        except _ApiError as exc:
            return self._error(exc.status, exc.description)
        name = _CANONICAL.get(method.lower(), method)
        self.calls.append((name, params))
        handler = self._handlers.get(name)
        if handler is None:
            return self._error(404, "Not Found")

        fault: _Fault | TelegramFault | None = self._take(self._faults, name)
        delay: _Delay | TelegramDelay | None = None
        if fault is None:
            delay = self._take(self._delays, name)
        if fault is None and delay is None and self.fault_hook is not None:
            lowered = name.lower()
            if lowered not in _HOOK_EXEMPT:
                injected = self.fault_hook(lowered, dict(params))
                if isinstance(injected, TelegramFault):
                    fault = injected
                    self.injected_faults[lowered] = self.injected_faults.get(lowered, 0) + 1
                elif isinstance(injected, TelegramDelay):
                    delay = injected
                    self.injected_delays[lowered] = self.injected_delays.get(lowered, 0) + 1
        if fault is None and self._past_the_limit(name):
            self.over_limit += 1
            return self._error(429, "Too Many Requests: retry after 1", 1)
        if fault is not None:
            return self._error(fault.status, fault.description, fault.retry_after)
        if delay is not None and delay.before:
            await self._hold(delay.seconds)
        try:
            result = await handler(params)
            response = web.json_response({"ok": True, "result": result})
        except _ApiError as exc:
            response = self._error(
                exc.status, exc.description, exc.retry_after, exc.migrate_to_chat_id
            )
        if delay is not None and not delay.before:
            await self._hold(delay.seconds)
        return response

    def _past_the_limit(self, name: str) -> bool:
        if self.max_requests_per_second is None or name.lower() in _LIMIT_EXEMPT:
            return False
        moment = time.monotonic()
        recent = self._recent
        while recent and recent[0] <= moment - 1.0:
            recent.popleft()
        if len(recent) >= self.max_requests_per_second:
            return True
        recent.append(moment)
        self.counted_calls.append(moment)
        return False

    async def _hold(self, seconds: float) -> None:
        """Hold a reply; the handler runs to the end even if the client goes away meanwhile."""
        self.held_replies += 1
        try:
            await self._sleep(seconds)
        finally:
            self.held_replies -= 1
            self._state_changed()

    @staticmethod
    def _take(table: dict[str, deque[Any]], name: str) -> Any:
        queue = table.get(name.lower())
        if not queue:
            return None
        item = queue[0]
        item.remaining -= 1
        if item.remaining <= 0:
            queue.popleft()
        return item

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    @staticmethod
    def _error(
        status: int,
        description: str,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> web.Response:
        body: JSONDict = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        if migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": migrate_to_chat_id}
        return web.json_response(body, status=status)

    @staticmethod
    def _decode_value(name: str, raw: str) -> Any:
        if name in _STRING_FIELDS:
            return raw
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    async def _read_params(self, request: web.Request) -> JSONDict:
        params: JSONDict = {k: self._decode_value(k, v) for k, v in request.query.items()}
        if not request.body_exists:
            return params
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.read())
            except ValueError as exc:
                raise _ApiError(400, "Bad Request: can't parse JSON object") from exc
            if not isinstance(body, dict):
                raise _ApiError(400, "Bad Request: JSON object expected")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    params[key] = UploadedFile(
                        filename=value.filename,
                        content_type=value.content_type,
                        data=value.file.read(),
                    )
                elif isinstance(value, bytes | bytearray):
                    params[key] = self._decode_value(key, value.decode("utf-8", "replace"))
                else:
                    params[key] = self._decode_value(key, value)
        return params

    # ---------------------------------------------------------------- helpers for methods

    @property
    def _bot_user(self) -> JSONDict:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    def _user_json(
        self, user_id: int, first_name: str, username: str | None, language_code: str | None
    ) -> JSONDict:
        """A User object. `language_code` None keeps the language the user last reported, ""
        clears it: Telegram puts the user's current app language in every ``from``."""
        if language_code is not None:
            if language_code:
                self._languages[user_id] = language_code
            else:
                self._languages.pop(user_id, None)
        user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        language = self._languages.get(user_id)
        if language:
            user["language_code"] = language
        return user

    def _current_user(self, user: JSONDict) -> JSONDict:
        """A copy of a stored User object with the language the user reports now."""
        result = copy.deepcopy(user)
        if result.get("is_bot"):
            return result
        language = self._languages.get(int(result["id"]))
        if language:
            result["language_code"] = language
        else:
            result.pop("language_code", None)
        return result

    def _touch_chat(
        self, user_id: int, first_name: str, username: str | None, language_code: str | None
    ) -> _Chat:
        user = self._user_json(user_id, first_name, username, language_code)
        chat_json: JSONDict = {"id": user_id, "first_name": first_name, "type": "private"}
        if username:
            chat_json["username"] = username
        chat = self._chats.get(user_id)
        if chat is None:
            chat = self._chats[user_id] = _Chat(chat=chat_json, members={user_id: user})
        else:
            chat.chat, chat.members[user_id] = chat_json, user
        return chat

    def _group(self, group_id: int, title: str | None = None) -> _Chat:
        """The group, created on first use with the bot in it."""
        if group_id >= 0:
            raise ValueError(f"group ids are negative, not {group_id}")
        chat = self._chats.get(group_id)
        if chat is None:
            supergroup = group_id <= -1_000_000_000_000  # -100 and the channel-style number
            chat_json: JSONDict = {
                "id": group_id,
                "title": title or f"Group {-group_id}",
                "type": "supergroup" if supergroup else "group",
            }
            if not supergroup:
                chat_json["all_members_are_administrators"] = True
            chat = self._chats[group_id] = _Chat(chat=chat_json, members={})
        if chat.migrated_to is not None:
            raise ValueError(f"group {group_id} became the supergroup {chat.migrated_to}")
        return chat

    def _member_json(self, chat: _Chat, who: Any) -> JSONDict:
        """A User object from a user id (a known member, the bot, or a new user) or a dict."""
        if isinstance(who, dict):
            return copy.deepcopy(who)
        user_id = int(who)
        if user_id == self.bot_id:
            return self._bot_user
        known = chat.members.get(user_id)
        if known is not None:
            return copy.deepcopy(known)
        return self._user_json(user_id, f"User {user_id}", None, None)

    def _replied(self, chat: _Chat, message_id: int | None) -> JSONDict | None:
        """What Telegram puts in reply_to_message: the message, without its own reply."""
        if message_id is None:
            return None
        target = chat.messages.get(message_id)
        if target is None:
            raise ValueError(f"chat {chat.chat['id']} has no message {message_id}")
        snapshot = copy.deepcopy(target)
        snapshot.pop("reply_to_message", None)
        return snapshot

    def _compose(
        self,
        chat: _Chat,
        sender: JSONDict,
        text: str,
        entities: list[JSONDict],
        *,
        as_caption: bool,
        reply_to: JSONDict | None = None,
        extra: JSONDict | None = None,
    ) -> JSONDict:
        """A message written in `chat` by `sender` (text, or a photo's caption), stored there."""
        message: JSONDict = {
            "message_id": next(self._message_ids),
            "from": copy.deepcopy(sender),
            "chat": copy.deepcopy(chat.chat),
            "date": int(time.time()),
        }
        if extra:
            message.update(copy.deepcopy(extra))
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if as_caption:
            file_number = next(self._file_ids)
            message["photo"] = [
                {
                    "file_id": f"AgACAgIAAxkBAAI{file_number:08d}",
                    "file_unique_id": f"AQAD{file_number:06d}",
                    "file_size": 1234,
                    "width": 90,
                    "height": 90,
                }
            ]
            message["caption"] = text
            if entities:
                message["caption_entities"] = copy.deepcopy(entities)
        else:
            message["text"] = text
            if entities:
                message["entities"] = copy.deepcopy(entities)
        chat.messages[message["message_id"]] = message
        return message

    def _service(
        self, chat: _Chat, actor: JSONDict, fields: JSONDict, *, opens_topic: bool = False
    ) -> JSONDict:
        """Store a service message in the group and deliver it (whatever the privacy mode)."""
        message_id = next(self._message_ids)
        message: JSONDict = {
            "message_id": message_id,
            "from": copy.deepcopy(actor),
            "chat": copy.deepcopy(chat.chat),
            "date": int(time.time()),
        }
        if opens_topic:
            message["message_thread_id"] = message_id
        message.update(copy.deepcopy(fields))
        chat.messages[message_id] = message
        if not chat.bot_removed:
            self._queue_update({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    @staticmethod
    def _service_default(kind: str) -> Any:
        now = int(time.time())
        defaults: JSONDict = {
            "new_chat_title": "New title",
            "new_chat_photo": [
                {
                    "file_id": f"AgACAgIAAxkBAAI{now:08d}",
                    "file_unique_id": "AQADchatphoto",
                    "file_size": 4321,
                    "width": 160,
                    "height": 160,
                }
            ],
            "delete_chat_photo": True,
            "group_chat_created": True,
            "message_auto_delete_timer_changed": {"message_auto_delete_time": 86400},
            "video_chat_scheduled": {"start_date": now + 3600},
            "video_chat_started": {},
            "video_chat_ended": {"duration": 60},
            "forum_topic_created": {"name": "Topic", "icon_color": 7322096},
            "forum_topic_edited": {"name": "Renamed topic"},
            "forum_topic_closed": {},
            "forum_topic_reopened": {},
            "general_forum_topic_hidden": {},
            "general_forum_topic_unhidden": {},
        }
        if kind not in defaults:
            raise ValueError(f"group_event({kind!r}) needs a value")
        return defaults[kind]

    def _migrate(self, chat: _Chat, actor: JSONDict, new_id: Any) -> JSONDict:
        """A basic group becomes a supergroup: the old group's message is returned."""
        old_id = int(chat.chat["id"])
        if chat.chat["type"] != "group":
            raise ValueError("only a basic group migrates to a supergroup")
        target = int(new_id) if new_id is not None else int(f"-100{-old_id:010d}")
        if target in self._chats or target > -1_000_000_000_000:
            raise ValueError(f"cannot migrate to {target}")
        supergroup = _Chat(
            chat={"id": target, "title": chat.chat["title"], "type": "supergroup"},
            members=copy.deepcopy(chat.members),
            bot_removed=chat.bot_removed,
        )
        self._chats[target] = supergroup
        message = self._service(chat, actor, {"migrate_to_chat_id": target})
        chat.migrated_to = target
        self._service(supergroup, actor, {"migrate_from_chat_id": old_id})
        return message

    def _delivers(self, chat: _Chat, message: JSONDict) -> bool:
        """Whether Telegram hands the bot this member's message of the group."""
        if chat.bot_removed:
            return False
        if not self.privacy_mode:
            return True
        replied = message.get("reply_to_message") or {}
        if (replied.get("from") or {}).get("id") == self.bot_id:
            return True
        if (message.get("via_bot") or {}).get("id") == self.bot_id:
            return True
        text = message.get("text") or message.get("caption") or ""
        units = text.encode("utf-16-le", "surrogatepass")
        me = self.bot_username.lower()
        for entity in message.get("entities") or message.get("caption_entities") or []:
            begin, length = int(entity["offset"]), int(entity["length"])
            value = units[begin * 2 : (begin + length) * 2].decode("utf-16-le", "surrogatepass")
            kind = entity["type"]
            if kind == "mention" and value[1:].lower() == me:
                return True
            if kind == "text_mention" and (entity.get("user") or {}).get("id") == self.bot_id:
                return True
            if kind == "bot_command":
                _, at, target = value.partition("@")
                if not at or target.lower() == me:
                    return True
        return False

    @staticmethod
    def _int_param(params: JSONDict, name: str, missing: str) -> int:
        value = params.get(name)
        if value is None or value == "":
            raise _ApiError(400, missing)
        if isinstance(value, bool):
            raise _ApiError(400, f"Bad Request: invalid {name} specified")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _ApiError(400, f"Bad Request: invalid {name} specified")

    def _chat_for(self, params: JSONDict) -> tuple[int, _Chat]:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(raw, str) and not re.fullmatch(r"-?\d+", raw.strip()):
            raise _ApiError(400, _CHAT_NOT_FOUND)  # @username: no public chats here
        chat_id = self._int_param(params, "chat_id", "Bad Request: chat_id is empty")
        if chat_id in self._blocked:
            raise _ApiError(403, _BLOCKED)
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _ApiError(400, _CHAT_NOT_FOUND)
        if chat.migrated_to is not None:
            raise _ApiError(400, _UPGRADED, migrate_to_chat_id=chat.migrated_to)
        if chat.bot_removed:
            raise _ApiError(403, _KICKED.format(type=chat.chat["type"]))
        return chat_id, chat

    def _format(
        self, params: JSONDict, kind: _Content, too_long: str
    ) -> tuple[str | None, list[JSONDict]]:
        """The text or caption as Telegram stores it: parsed, trimmed, checked, entities found."""
        raw = params.get(kind.field)
        if raw is None or raw == "":
            if kind.required:
                raise _ApiError(400, "Bad Request: message text is empty")
            return None, []
        text = raw if isinstance(raw, str) else json.dumps(raw)
        explicit = params.get(kind.entities_field)
        parse_mode = params.get("parse_mode")
        entities: list[JSONDict] = []
        if isinstance(explicit, list) and explicit:
            entities = [dict(e) for e in explicit if isinstance(e, dict)]
        elif parse_mode:
            mode = str(parse_mode).lower()
            if mode in ("markdownv2", "markdown"):
                raise _ApiError(400, _UNIMPLEMENTED_PARSE_MODE.format(mode=parse_mode))
            if mode != "html":
                raise _ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
            try:
                text, entities = _parse_html(text)
            except _ParseError as exc:
                raise _ApiError(400, f"Bad Request: can't parse entities: {exc}") from exc
        text, entities = _strip(text, entities)
        if not text:
            if kind.required:
                raise _ApiError(400, "Bad Request: message text is empty")
            return None, []
        if utf16_len(text) > kind.limit:
            raise _ApiError(400, too_long)
        return text, _merge_found_entities(text, entities)

    @staticmethod
    def _check_markup(markup: Any, *, inline_only: bool = False) -> JSONDict | None:
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            if inline_only:
                raise _ApiError(400, "Bad Request: inline keyboard expected")
            return markup
        keyboard = markup["inline_keyboard"]
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise _ApiError(
                400,
                'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an '
                "Array of Arrays",
            )
        kinds = (
            "url",
            "callback_data",
            "login_url",
            "switch_inline_query",
            "switch_inline_query_current_chat",
            "switch_inline_query_chosen_chat",
            "callback_game",
            "pay",
            "web_app",
            "copy_text",
        )
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict):
                    raise _ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: InlineKeyboardButton "
                        "must be an Object",
                    )
                if not isinstance(button.get("text"), str):
                    raise _ApiError(
                        400,
                        'Bad Request: can\'t parse inline keyboard button: Field "text" must '
                        "be of type String",
                    )
                if not any(kind in button for kind in kinds):
                    raise _ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: Text buttons are "
                        "unallowed in the inline keyboard",
                    )
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                        raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if "url" in button:
                    url = button["url"]
                    if not isinstance(url, str) or not _check_link(url):
                        raise _ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return markup

    @staticmethod
    def _inline(markup: JSONDict | None) -> JSONDict | None:
        return markup if markup is not None and "inline_keyboard" in markup else None

    def _reply_target(self, chat: _Chat, params: JSONDict) -> JSONDict | None:
        reply = params.get("reply_parameters")
        allow = bool(params.get("allow_sending_without_reply"))
        message_id: Any = None
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow = allow or bool(reply.get("allow_sending_without_reply"))
            other = reply.get("chat_id")
            if other is not None and str(other) != str(chat.chat["id"]):
                other_chat = (
                    self._chats.get(int(other)) if str(other).lstrip("-").isdigit() else None
                )
                if other_chat is None:
                    raise _ApiError(400, _CHAT_NOT_FOUND)
                chat = other_chat
        elif params.get("reply_to_message_id") not in (None, ""):
            message_id = params["reply_to_message_id"]
        if message_id is None:
            return None
        try:
            target = chat.messages.get(int(message_id))
        except (TypeError, ValueError):
            target = None
        if target is None:
            if allow:
                return None
            raise _ApiError(400, "Bad Request: message to be replied not found")
        snapshot = copy.deepcopy(target)
        snapshot.pop("reply_to_message", None)
        return snapshot

    def _store_bot_message(
        self, chat_id: int, chat: _Chat, sent: SentMessage, body: JSONDict
    ) -> JSONDict:
        message: JSONDict = {
            "message_id": sent.message_id,
            "from": self._bot_user,
            "chat": copy.deepcopy(chat.chat),
            "date": sent.date,
            **body,
        }
        chat.messages[sent.message_id] = message
        chat.bot_message_ids.add(sent.message_id)
        self._sent.setdefault(chat_id, []).append(sent)
        self._sent_index[(chat_id, sent.message_id)] = sent
        if self.on_message is not None:
            self.on_message(sent)
        return copy.deepcopy(message)

    def _editable(self, params: JSONDict) -> tuple[int, _Chat, JSONDict, SentMessage]:
        if params.get("inline_message_id"):
            raise _ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat_id, chat = self._chat_for(params)
        message_id = self._int_param(
            params, "message_id", "Bad Request: message identifier is not specified"
        )
        message = chat.messages.get(message_id)
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        sent = self._sent_index.get((chat_id, message_id))
        if sent is None:
            raise _ApiError(400, "Bad Request: message can't be edited")
        return chat_id, chat, message, sent

    @staticmethod
    def _set_or_drop(message: JSONDict, key: str, value: Any) -> None:
        if value:
            message[key] = copy.deepcopy(value)
        else:
            message.pop(key, None)

    # ---------------------------------------------------------------- methods

    async def _true(self, params: JSONDict) -> bool:
        return True

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self._bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self._webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = min(100, max(1, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = {str(kind) for kind in allowed} or None
        if offset < 0:
            del self._updates[: max(0, len(self._updates) + offset)]
        elif offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        self._poll_token += 1
        token = self._poll_token
        self._wake_all()  # a poll still waiting is now superseded
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if token != self._poll_token:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            if self._updates:
                return copy.deepcopy(self._updates[:limit])
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing.is_set():
                return []
            wake = self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)

    async def _set_webhook(self, params: JSONDict) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None:
            secret = str(secret)
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
                raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _ApiError(400, "Bad Request: bad webhook: invalid URL")
            if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise _ApiError(
                    400, "Bad Request: bad webhook: the fake delivers to loopback addresses only"
                )
        if params.get("drop_pending_updates"):
            self._updates.clear()
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = {str(kind) for kind in allowed} or None
        self._webhook_url = url
        self._webhook_secret = secret
        self._webhook_max_connections = _max_connections(params.get("max_connections"))
        self._webhook_error = None
        if url:
            self._start_webhook_loop()
        else:
            await self._stop_webhook_loop()
        await self._changed_async()
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook_url = ""
        self._webhook_secret = None
        await self._stop_webhook_loop()
        await self._changed_async()
        return True

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self._webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._webhook_url:
            info["max_connections"] = self._webhook_max_connections
            info["ip_address"] = "127.0.0.1"
            if self._allowed_updates is not None:
                info["allowed_updates"] = sorted(self._allowed_updates)
        if self._webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat_id, chat = self._chat_for(params)
        return await self._send(params, chat_id, chat, _TEXT)

    async def _send_document(self, params: JSONDict) -> JSONDict:
        chat_id, chat = self._chat_for(params)
        document = params.get("document")
        if isinstance(document, str) and document.startswith("attach://"):
            document = params.get(document[len("attach://") :])
        if isinstance(document, UploadedFile):
            data, name, mime = document.data, document.filename, document.content_type
        elif isinstance(document, str) and document in self._files:
            data, name, mime = self._files[document]
        elif isinstance(document, str) and document:
            raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        else:
            raise _ApiError(400, "Bad Request: there is no document in the request")
        if not data:
            raise _ApiError(400, "Bad Request: file must be non-empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise _ApiError(413, "Request Entity Too Large")
        if not mime or mime == "application/octet-stream":
            mime = mimetypes.guess_type(name or "")[0] or mime or "application/octet-stream"
        return await self._send(params, chat_id, chat, _CAPTION, (data, name, mime))

    async def _send(
        self,
        params: JSONDict,
        chat_id: int,
        chat: _Chat,
        kind: _Content,
        upload: tuple[bytes, str | None, str] | None = None,
    ) -> JSONDict:
        """sendMessage (kind _TEXT) and sendDocument (kind _CAPTION, with the file)."""
        text, entities = self._format(params, kind, kind.too_long_send)
        markup = self._check_markup(params.get("reply_markup"))
        reply = self._reply_target(chat, params)
        sent = SentMessage(
            message_id=next(self._message_ids),
            chat_id=chat_id,
            text=text,
            parse_mode=params.get("parse_mode") or None,
            reply_to_message_id=reply["message_id"] if reply else None,
            reply_markup=copy.deepcopy(markup),
            entities=entities,
            date=int(time.time()),
        )
        body: JSONDict = {}
        if upload is not None:
            sent.document, sent.filename, sent.mime_type = upload
            body["document"] = self._store_file(*upload)
        self._set_or_drop(body, kind.field, text)
        self._set_or_drop(body, kind.entities_field, entities)
        if reply:
            body["reply_to_message"] = reply
        self._set_or_drop(body, "reply_markup", self._inline(markup))
        result = self._store_bot_message(chat_id, chat, sent, body)
        await self._changed_async()
        return result

    def _store_file(self, data: bytes, name: str | None, mime: str) -> JSONDict:
        number = next(self._file_ids)
        file_id = f"BQACAgIAAxkDAAI{number:08d}"
        self._files[file_id] = (data, name, mime)
        doc: JSONDict = {
            "file_id": file_id,
            "file_unique_id": f"AgAD{number:06d}",
            "file_size": len(data),
            "mime_type": mime,
        }
        if name:
            doc["file_name"] = name
        return doc

    async def _edit_content(self, params: JSONDict, kind: _Content) -> JSONDict:
        """editMessageText (kind _TEXT) and editMessageCaption (kind _CAPTION)."""
        _chat_id, _chat, message, sent = self._editable(params)
        if (sent.document is not None) != kind.has_document:
            raise _ApiError(400, f"Bad Request: there is no {kind.field} in the message to edit")
        text, entities = self._format(params, kind, kind.too_long_edit)
        markup = self._check_markup(params.get("reply_markup"), inline_only=True)
        unchanged = (
            text == sent.text
            and entities == sent.entities
            and markup == self._inline(sent.reply_markup)
        )
        if unchanged:
            raise _ApiError(400, _NOT_MODIFIED)
        sent.text, sent.entities = text, entities
        sent.parse_mode = params.get("parse_mode") or None
        self._set_or_drop(message, kind.field, text)
        self._set_or_drop(message, kind.entities_field, entities)
        return await self._edited(message, sent, markup)

    async def _edit_message_reply_markup(self, params: JSONDict) -> JSONDict:
        _chat_id, _chat, message, sent = self._editable(params)
        markup = self._check_markup(params.get("reply_markup"), inline_only=True)
        if markup == self._inline(sent.reply_markup):
            raise _ApiError(400, _NOT_MODIFIED)
        return await self._edited(message, sent, markup)

    async def _edited(
        self, message: JSONDict, sent: SentMessage, markup: JSONDict | None
    ) -> JSONDict:
        sent.reply_markup = copy.deepcopy(markup)
        sent.edits += 1
        self._set_or_drop(message, "reply_markup", markup)
        message["edit_date"] = int(time.time())
        await self._changed_async()
        return copy.deepcopy(message)

    async def _delete_message(self, params: JSONDict) -> bool:
        chat_id, chat = self._chat_for(params)
        message_id = self._int_param(
            params, "message_id", "Bad Request: message identifier is not specified"
        )
        if chat.messages.pop(message_id, None) is None:
            raise _ApiError(400, "Bad Request: message to delete not found")
        chat.bot_message_ids.discard(message_id)
        sent = self._sent_index.pop((chat_id, message_id), None)
        if sent is not None:
            self._sent[chat_id].remove(sent)
            self._deleted.setdefault(chat_id, []).append(sent)
        await self._changed_async()
        return True

    async def _send_chat_action(self, params: JSONDict) -> bool:
        # The server reads the action (lower-cased) before it looks at the chat.
        raw = params.get("action")
        action = _CHAT_ACTIONS.get("" if raw is None else str(raw).lower())
        if action is None:
            raise _ApiError(400, _WRONG_ACTION)
        chat_id, _chat = self._chat_for(params)
        self._chat_actions.setdefault(chat_id, []).append(action)
        await self._changed_async()
        return True

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        query = self._queries.get(query_id)
        expired = (
            query is not None
            and self.callback_query_ttl is not None
            and time.monotonic() - query.created > self.callback_query_ttl
        )
        if query is None or query.answered or expired:
            raise _ApiError(400, _QUERY_TOO_OLD)
        text = params.get("text")
        if text is not None and utf16_len(str(text)) > MAX_CALLBACK_ANSWER_LENGTH:
            raise _ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        query.answered = True
        self.callback_answers[query_id] = dict(params)
        await self._changed_async()
        return True

    def _scope_key(self, params: JSONDict) -> ScopeKey:
        """The ``scope`` parameter, its chat looked up as the Bot API server and TDLib do."""
        kind, chat_ref, user_id = _parse_scope(params.get("scope"))
        if chat_ref is None:
            return (kind, None, user_id)
        if not re.fullmatch(r"-?\d+", chat_ref.strip()):
            raise _ApiError(400, _CHAT_NOT_FOUND)  # @username: no public chats here
        chat_id = int(chat_ref)
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _ApiError(400, _CHAT_NOT_FOUND)
        if chat.chat["type"] == "private" and kind != "chat":
            raise _ApiError(400, "Bad Request: can't use specified scope in private chats")
        return (kind, chat_id, user_id)

    def _store_commands(self, scope: ScopeKey, language: str, commands: list[JSONDict]) -> None:
        if commands:
            self._commands[(scope, language)] = commands
        else:
            self._commands.pop((scope, language), None)

    async def _set_my_commands(self, params: JSONDict) -> bool:
        # In the Bot API server's order: the commands' JSON, the scope (its JSON, then its chat),
        # the language (TDLib), each command (TDLib: trimmed, one leading "/" dropped), then
        # what Telegram's servers refuse (too many commands, characters outside a-z 0-9 _).
        commands = _parse_commands(params.get("commands"))
        scope = self._scope_key(params)
        language = _language_code(params)
        cleaned: list[JSONDict] = []
        for raw_name, raw_description in commands:
            name = raw_name.strip(_TD_SPACE)
            if name.startswith("/"):
                name = name[1:]
            if not name:
                raise _ApiError(400, "Bad Request: command must be non-empty")
            if len(name) > MAX_COMMAND_LENGTH:
                raise _ApiError(
                    400, f"Bad Request: command length must not exceed {MAX_COMMAND_LENGTH}"
                )
            description = raw_description.strip(_TD_SPACE)
            if not description:
                raise _ApiError(400, "Bad Request: command description must be non-empty")
            if len(description) > MAX_COMMAND_DESCRIPTION_LENGTH:
                raise _ApiError(
                    400,
                    "Bad Request: command description length must not exceed "
                    f"{MAX_COMMAND_DESCRIPTION_LENGTH}",
                )
            cleaned.append({"command": name, "description": description})
        if len(cleaned) > MAX_COMMANDS:
            raise _ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        if any(not re.fullmatch(r"[a-z0-9_]+", c["command"]) for c in cleaned):
            raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self._store_commands(scope, language, cleaned)
        await self._changed_async()
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        scope = self._scope_key(params)
        language = _language_code(params)
        return copy.deepcopy(self._commands.get((scope, language), []))

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        scope = self._scope_key(params)
        language = _language_code(params)
        self._store_commands(scope, language, [])
        await self._changed_async()
        return True

    async def _set_profile_text(
        self, params: JSONDict, *, field: str, table: dict[str, str], limit: int, too_long: str
    ) -> bool:
        """setMyDescription and setMyShortDescription: "" (or nothing) removes the text of
        that language. The language is checked first (TDLib), the length by Telegram."""
        language = _language_code(params)
        raw = params.get(field)
        text = "" if raw is None else str(raw)
        if len(text) > limit:
            raise _ApiError(400, too_long)
        if text:
            table[language] = text
        else:
            table.pop(language, None)
        await self._changed_async()
        return True

    async def _get_profile_text(
        self, params: JSONDict, *, field: str, table: dict[str, str]
    ) -> JSONDict:
        """getMyDescription and getMyShortDescription: that language's own text, or ""."""
        return {field: table.get(_language_code(params), "")}

    async def _set_my_name(self, params: JSONDict) -> bool:
        language = _language_code(params)
        raw = params.get("name")
        name = "" if raw is None else str(raw)
        if len(name) > MAX_NAME_LENGTH or (not name and not language):
            raise _ApiError(400, "Bad Request: BOT_TITLE_INVALID")
        if not language:
            self.bot_first_name = name
        elif name:
            self._names[language] = name
        else:
            self._names.pop(language, None)
        await self._changed_async()
        return True

    async def _get_my_name(self, params: JSONDict) -> JSONDict:
        return {"name": self.name_for(_language_code(params))}

    # ---------------------------------------------------------------- webhook delivery

    def _start_webhook_loop(self) -> None:
        if self._loop is None or (self._webhook_task is not None and not self._webhook_task.done()):
            return
        self._webhook_task = self._loop.create_task(self._webhook_loop())

    async def _stop_webhook_loop(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _webhook_loop(self) -> None:
        """Deliver queued updates one at a time, in order; back off and retry on failure."""
        delay = self.webhook_retry_delay
        async with aiohttp.ClientSession() as session:
            while not self._closing.is_set():
                wake = self._wake
                if not self._webhook_url or not self._updates:
                    await wake.wait()
                    continue
                update = self._updates[0]
                headers = {"Content-Type": "application/json"}
                if self._webhook_secret:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = self._webhook_secret
                error: str | None = None
                try:
                    async with session.post(
                        self._webhook_url,
                        data=json.dumps(update, ensure_ascii=False).encode(),
                        headers=headers,
                        timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
                    ) as response:
                        await response.read()
                        if not 200 <= response.status < 300:
                            error = (
                                "Wrong response from the webhook: "
                                f"{response.status} {response.reason or ''}".rstrip()
                            )
                except TimeoutError:
                    error = "Read timeout expired"
                except aiohttp.ClientError as exc:
                    error = f"Connection failed: {exc}" if str(exc) else "Connection refused"
                if error is None:
                    if self._updates and self._updates[0] is update:
                        self._updates.pop(0)
                    self.webhook_deliveries.append(copy.deepcopy(update))
                    delay = self.webhook_retry_delay
                    await self._changed_async()
                    continue
                self._webhook_error = (int(time.time()), error)
                await self.notify()
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

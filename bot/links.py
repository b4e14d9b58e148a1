"""Finding video links in what a user pasted (usually a platform's share text)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from telegram import Message, MessageEntity

MAX_URL_LENGTH = 2048

# Characters a URL may hold (RFC 3986 unreserved, reserved and '%'). Telegram's URL entity runs
# on through text glued to a link ("https://v.douyin.com/a/复制此链接"), so the link is cut at
# the first character outside this set.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# Fallback for text Telegram did not mark: scheme links and bare host/path links.
_LOOSE_URL = re.compile(
    r"(?:https?://|(?<![\w.@/])(?=[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/))"
    r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\")]}"


def links_in(message: Message) -> list[str]:
    """Distinct usable links of a message (text or caption), in order of appearance."""
    candidates: list[str] = []
    for entities, text in (
        (message.parse_entities([MessageEntity.URL, MessageEntity.TEXT_LINK]), message.text),
        (
            message.parse_caption_entities([MessageEntity.URL, MessageEntity.TEXT_LINK]),
            message.caption,
        ),
    ):
        if text is None:
            continue
        marked = False
        for entity, value in entities.items():
            marked = True
            candidates.append(
                (entity.url or "") if entity.type == MessageEntity.TEXT_LINK else value
            )
        if not marked:
            candidates.extend(match.group(0) for match in _LOOSE_URL.finditer(text))
    return distinct_links(candidates)


def distinct_links(candidates: list[str]) -> list[str]:
    seen: list[str] = []
    for candidate in candidates:
        link = normalize_link(candidate or "")
        if link is not None and link not in seen:
            seen.append(link)
    return seen


def normalize_link(raw: str) -> str | None:
    """A clean http(s) link to a public host, or None if `raw` is not one."""
    match = _URL_CHARS.match(raw.strip())
    if match is None:
        return None
    link = match.group(0).rstrip(_TRAILING)
    if "://" not in link:
        link = "https://" + link
    if len(link) > MAX_URL_LENGTH:
        return None
    try:
        parts = urlsplit(link)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        return None
    if not _is_public_host(hostname):
        return None
    return link


def _is_public_host(hostname: str) -> bool:
    host = hostname.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # A name: it needs a dot and a top-level domain of letters (not "localhost" or "intranet").
        labels = host.split(".")
        return len(labels) >= 2 and labels[-1].isalpha() and all(labels) and host != "localhost"
    return address.is_global

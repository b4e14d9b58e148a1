"""Finding video links in what a user pasted (usually a platform's share text), and keeping
only the ones that may reach Coze: http(s) links to public hosts.

A link is read the way a browser reads it (the WHATWG URL standard): the host is
percent-decoded and mapped by UTS #46 (full-width letters and digits, upper case), a host whose
last label is a number is an IPv4 address in any of its spellings (``2130706433``,
``0x7f.1``, ``0177.0.0.1``, ``127.1``), and ``[...]`` is an IPv6 address. The link that is kept
is written out again from what was read: lower-case scheme, the host in ASCII (IDNA, e.g.
``www.xn--mnchen-3ya.de``) or as a canonical address, a port only if it is not the default, then
the path, query and fragment as they were (ASCII only). Any URL parser reads that string the same
way, so what was checked is what Coze fetches.

Names are not resolved here (no DNS): a public name that resolves to a private address can only
be caught by whoever fetches it. ``[limits] allowed_hosts`` narrows what is accepted.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_to_bytes

import idna
from telegram import Message, MessageEntity

MAX_URL_LENGTH = 2048


class LinkRefusal(StrEnum):
    """Why something that is clearly a link will not become a task."""

    NOT_HTTP = "not_http"
    TOO_LONG = "too_long"
    CREDENTIALS = "credentials"
    LOCAL_NAME = "local_name"
    PRIVATE_ADDRESS = "private_address"
    HOST_NOT_ALLOWED = "host_not_allowed"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class LinkScan:
    links: list[str]  # distinct usable links, in order of appearance
    refused: list[tuple[str, LinkRefusal]]  # what clearly was a link but was refused (distinct)


# --- finding candidates ----------------------------------------------------------------------

# Fallback for text Telegram did not mark: "scheme://..." anywhere (a scheme glued to Chinese
# text too), and bare host/path links ("v.douyin.com/abc/") whose top-level domain is letters.
# The end of each match is found by check_link, as for Telegram's entities.
_LOOSE_URL = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://\S+"
    r"|(?<![\w.@/:%\-])[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{2,}(?::[0-9]{1,5})?[/?#]\S*"
)


def scan_links(message: Message, *, allowed_hosts: Sequence[str] = ()) -> LinkScan:
    """The usable links of a message (text or caption), and what was refused and why.

    Candidates are Telegram's url and text_link entities; only when Telegram marked nothing in
    the text (or caption) is it searched with a loose pattern. A candidate without a scheme
    counts only with a path ("v.douyin.com/abc/"), so "readme.md" or "example.com" in a sentence
    is neither a link nor a refusal.
    """
    links: list[str] = []
    refused: list[tuple[str, LinkRefusal]] = []
    for candidate in _candidates(message):
        verdict = _examine(candidate, allowed_hosts)
        if not verdict.url_shaped:
            continue
        if isinstance(verdict.result, LinkRefusal):
            if (verdict.shown, verdict.result) not in refused:
                refused.append((verdict.shown, verdict.result))
        elif verdict.result not in links:
            links.append(verdict.result)
    return LinkScan(links=links, refused=refused)


def links_in(message: Message, *, allowed_hosts: Sequence[str] = ()) -> list[str]:
    """Distinct usable links of a message (text or caption), in order of appearance."""
    return scan_links(message, allowed_hosts=allowed_hosts).links


def _candidates(message: Message) -> Iterable[str]:
    kinds: list[str | None] = [MessageEntity.URL, MessageEntity.TEXT_LINK]
    for text, parse in (
        (message.text, message.parse_entities),
        (message.caption, message.parse_caption_entities),
    ):
        if text is None:
            continue
        entities = parse(kinds)
        if entities:
            for entity, value in entities.items():
                if entity.type == MessageEntity.TEXT_LINK:
                    yield entity.url or ""
                else:
                    yield _with_scheme_before(text, entity.offset, value)
        else:
            yield from (match.group(0) for match in _LOOSE_URL.finditer(text))


def _with_scheme_before(text: str, offset: int, value: str) -> str:
    """A URL entity without a scheme, read from the "scheme://" that starts its word, if any.

    Telegram may mark only the tail of a URL it cannot read: in "http://12%37.0.0.1/" it marks
    "37.0.0.1/". The link the user wrote starts at "http://", so that is what is checked.
    """
    if _SCHEME_SLASHES.match(value):
        return value
    before = text.encode("utf-16-le", "surrogatepass")[: 2 * offset].decode(
        "utf-16-le", "surrogatepass"
    )
    last_word = _LAST_WORD.search(before)
    word = last_word.group(0) if last_word else ""
    schemes = list(_SCHEME_SLASHES.finditer(word))
    return word[schemes[-1].start() :] + value if schemes else value


# --- checking one candidate ------------------------------------------------------------------


def check_link(raw: str, *, allowed_hosts: Sequence[str] = ()) -> str | LinkRefusal:
    """One candidate (a link as Telegram marked it, maybe with text glued on): the clean link
    to send to Coze, or why it is refused. A candidate without a scheme is read as https."""
    return _examine(raw, allowed_hosts).result


@dataclass(frozen=True)
class _Verdict:
    shown: str  # the candidate as the user wrote it, cut where the link ends
    result: str | LinkRefusal
    url_shaped: bool  # has a scheme, or host and path: clearly meant as a link


class _Refused(Exception):
    def __init__(self, reason: LinkRefusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_SCHEME_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_LAST_WORD = re.compile(r"\S*\Z")
_PORT_AHEAD = re.compile(r"[0-9]+(?:[/?#]|$)")
_ASCII_AUTHORITY = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%[]"
)
# What may follow the host: RFC 3986 characters only. Telegram's URL entity runs on through
# text glued to a link ("https://v.douyin.com/a/复制此链接"), so the link ends at the first
# character outside this set (full-width punctuation such as ，。！ too).
_PATH = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_TRAILING = ".,;:!?'\""
_CLOSING = {")": "(", "]": "[", "}": "{"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _examine(raw: str, allowed_hosts: Sequence[str]) -> _Verdict:
    text = raw.strip()
    scheme, rest = _split_scheme(text)
    if scheme is not None and scheme not in ("http", "https"):
        shown = text.split(maxsplit=1)[0]
        return _Verdict(shown, LinkRefusal.NOT_HTTP, url_shaped=True)
    if scheme is None:
        prefix, body = "", rest
    else:
        # A browser skips any run of "/" and "\" after "http:" (special schemes).
        after = len(rest) - len(rest.lstrip("/\\"))
        prefix, body = text[: len(text) - len(rest) + after], rest[after:]
    body = _cut(body, schemeless=scheme is None)
    shown = prefix + body
    authority_end = min([len(body)] + [i for i in map(body.find, "/?#") if i >= 0])
    url_shaped = scheme is not None or authority_end < len(body)
    try:
        if len(shown) > MAX_URL_LENGTH:
            raise _Refused(LinkRefusal.TOO_LONG)
        host, link = _rebuild(scheme or "https", body[:authority_end], body[authority_end:])
        if len(link) > MAX_URL_LENGTH:
            raise _Refused(LinkRefusal.TOO_LONG)
        if allowed_hosts and not _is_allowed(host, allowed_hosts):
            raise _Refused(LinkRefusal.HOST_NOT_ALLOWED)
    except _Refused as refusal:
        return _Verdict(shown, refusal.reason, url_shaped)
    return _Verdict(shown, link, url_shaped)


def _split_scheme(text: str) -> tuple[str | None, str]:
    """(lower-case scheme or None, what follows "scheme:"); "host.com:443/x" has no scheme."""
    match = _SCHEME.match(text)
    if match is None:
        return None, text
    rest = text[match.end() :]
    if not rest.startswith("//") and ("." in match.group(1) or _PORT_AHEAD.match(rest)):
        return None, text  # host:port, not a scheme
    return match.group(1).lower(), rest


def _is_authority_char(ch: str) -> bool:
    if ch < "\x80":
        return ch in _ASCII_AUTHORITY
    return unicodedata.category(ch)[0] in "LMN"  # letters, marks and digits of any script


def _is_wide(ch: str) -> bool:
    """Chinese, Japanese and Korean characters (and full-width forms)."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _cut(body: str, *, schemeless: bool) -> str:
    """`body` (after "scheme://") cut where the link ends, without trailing punctuation."""
    end = 0
    while end < len(body) and _is_authority_char(body[end]):
        end += 1
    authority, tail = body[:end], body[end:]
    at = authority.rfind("@") + 1
    userinfo, hostport = authority[:at], authority[at:]
    if schemeless and not userinfo:
        hostport = _drop_glued_prefix(hostport)
    glued = _glued_suffix_start(hostport)
    if glued is not None:
        body = userinfo + hostport[:glued]  # text glued to the host: the link ends there
    else:
        path = _PATH.match(tail)
        body = userinfo + hostport + (path.group(0) if path else "")
    return _strip_trailing(body)


def _drop_glued_prefix(hostport: str) -> str:
    """Without a scheme, Chinese glued before an ASCII host ("复制打开v.douyin.com") is text."""
    first, dot, others = hostport.partition(".")
    wide = [i for i, ch in enumerate(first) if _is_wide(ch)]
    if dot and wide and wide[-1] + 1 < len(first) and first[wide[-1] + 1 :].isascii():
        return first[wide[-1] + 1 :] + dot + others
    return hostport


def _glued_suffix_start(hostport: str) -> int | None:
    """Where text glued after the host (or port) starts, if any.

    Top-level domains are all ASCII or all in one other script, so a last label that starts
    in ASCII and goes on in Chinese ("v.douyin.com复制此链接") is an ASCII host followed by
    text; a port ends at its first non-ASCII character. Other scripts are kept whole: a
    Cyrillic look-alike letter stays in the host, and the host is sent IDNA-encoded.
    """
    if hostport.startswith("["):
        close = hostport.find("]")
        colon = hostport.find(":", close) if close >= 0 else -1
    else:
        colon = hostport.find(":")
    if colon >= 0:
        for i in range(colon + 1, len(hostport)):
            if not hostport[i].isascii():
                return i
        return None
    label_start = hostport.rfind(".") + 1
    label = hostport[label_start:]
    for i, ch in enumerate(label):
        if _is_wide(ch):
            return label_start + i if i > 0 and label[:i].isascii() else None
    return None


def _strip_trailing(body: str) -> str:
    """Drop sentence punctuation after a link, and closing brackets that were not opened."""
    unmatched = {close: body.count(close) - body.count(open_) for close, open_ in _CLOSING.items()}
    end = len(body)
    while end:
        last = body[end - 1]
        if last in _CLOSING and unmatched[last] > 0:
            unmatched[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return body[:end]


def _rebuild(scheme: str, authority: str, rest: str) -> tuple[str, str]:
    """(host, link): the host as read and the link written out again with it, or _Refused."""
    if "@" in authority:
        raise _Refused(LinkRefusal.CREDENTIALS)
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _Refused(LinkRefusal.MALFORMED)
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise _Refused(LinkRefusal.MALFORMED)
        port = after[1:] if after else ""
    else:
        host, _, port = authority.partition(":")
    port_part = ""
    if port:
        if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise _Refused(LinkRefusal.MALFORMED)
        if int(port) != _DEFAULT_PORTS[scheme]:
            port_part = f":{int(port)}"
    host = _read_host(host)
    return host, f"{scheme}://{host}{port_part}{rest}"


# --- hosts -----------------------------------------------------------------------------------

# Special-use and never-public names (RFC 6761, 6762, 7686, 8375, 9476, ICANN's name-collision
# list): refused with everything under them.
_LOCAL_SUFFIXES = (
    "localhost",
    "localdomain",
    "local",
    "internal",
    "arpa",
    "home",
    "lan",
    "corp",
    "mail",
    "test",
    "example",
    "invalid",
    "onion",
    "alt",
)
# Public names known to resolve to private addresses (wildcard DNS for any IP, loopback
# helpers, a cloud's metadata service).
_PRIVATE_NAMES = (
    "nip.io",
    "sslip.io",
    "xip.io",
    "localtest.me",
    "lvh.me",
    "metadata.tencentyun.com",
)
_IPV4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (and Alibaba Cloud's metadata, 100.100.100.200)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _read_host(host: str) -> str:
    """The host as ASCII (IDNA) or a canonical address, if it is public; else _Refused."""
    if host.startswith("["):
        inner = host[1:-1]
        try:
            address6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise _Refused(LinkRefusal.MALFORMED) from None
        if "%" in inner:  # a zone ("fe80::1%eth0") is no part of a URL
            raise _Refused(LinkRefusal.MALFORMED)
        if not _is_public_v6(address6):
            raise _Refused(LinkRefusal.PRIVATE_ADDRESS)
        return f"[{address6.compressed}]"
    try:
        decoded = unquote_to_bytes(host).decode("utf-8")
        # UTS #46 as a browser maps a host (case, full-width forms), refusing every character
        # that is not a letter, digit, hyphen or dot in some script.
        mapped = idna.uts46_remap(decoded, std3_rules=True, transitional=False)
    except (ValueError, UnicodeError):
        raise _Refused(LinkRefusal.MALFORMED) from None
    if mapped.endswith("."):
        mapped = mapped[:-1]  # "example.com." is the same host
    labels = mapped.split(".")
    if not mapped or len(mapped) > 253 or "" in labels:
        raise _Refused(LinkRefusal.MALFORMED)
    if _ends_in_number(labels[-1]):
        address4 = _parse_ipv4(labels)
        if not _is_public_v4(address4):
            raise _Refused(LinkRefusal.PRIVATE_ADDRESS)
        return str(address4)
    try:
        name = idna.encode(mapped).decode("ascii")
    except (ValueError, UnicodeError):
        raise _Refused(LinkRefusal.MALFORMED) from None
    if "." not in name or any(_is_under(name, suffix) for suffix in _LOCAL_SUFFIXES):
        raise _Refused(LinkRefusal.LOCAL_NAME)
    if any(_is_under(name, private) for private in _PRIVATE_NAMES):
        raise _Refused(LinkRefusal.PRIVATE_ADDRESS)
    tld = name.rsplit(".", 1)[1]
    if not ((tld.isalpha() and len(tld) >= 2) or tld.startswith("xn--")):
        raise _Refused(LinkRefusal.MALFORMED)
    return name


def _is_under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _ends_in_number(label: str) -> bool:
    """WHATWG: a host whose last label is a number is an IPv4 address (or invalid)."""
    return label.isascii() and (label.isdigit() or _ipv4_number(label) is not None)


def _ipv4_number(part: str) -> int | None:
    """WHATWG IPv4 number: decimal, 0x-hex or 0-octal; None if it is not one."""
    if not part or not part.isascii():
        return None
    radix = 10
    if part[:2].lower() == "0x":
        radix, part = 16, part[2:]
    elif len(part) > 1 and part[0] == "0":
        radix, part = 8, part[1:]
    if not part:
        return 0
    digits = {10: "0123456789", 16: "0123456789abcdefABCDEF", 8: "01234567"}[radix]
    if any(ch not in digits for ch in part):
        return None
    return int(part, radix)


def _parse_ipv4(labels: list[str]) -> ipaddress.IPv4Address:
    """WHATWG IPv4 parser: 1 to 4 parts, the last filling the remaining bytes."""
    numbers = [_ipv4_number(label) for label in labels]
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise _Refused(LinkRefusal.MALFORMED)
    values = [n for n in numbers if n is not None]
    *first, last = values
    if any(n > 255 for n in first) or last >= 256 ** (5 - len(values)):
        raise _Refused(LinkRefusal.MALFORMED)
    value = last + sum(n * 256 ** (3 - i) for i, n in enumerate(first))
    return ipaddress.IPv4Address(value)


def _is_public_v4(address: ipaddress.IPv4Address) -> bool:
    return address.is_global and not any(address in net for net in _IPV4_NOT_PUBLIC)


def _is_public_v6(address: ipaddress.IPv6Address) -> bool:
    """Only global unicast (2000::/3) that embeds no private IPv4 address.

    Everything else is refused, including IPv4-mapped (::ffff:0:0/96), IPv4-compatible and
    NAT64 (64:ff9b::/96) addresses whatever they embed: nobody shares a video that way.
    """
    if address not in _IPV6_GLOBAL_UNICAST or not address.is_global:  # multicast is ff00::/8
        return False
    if address.sixtofour is not None and not _is_public_v4(address.sixtofour):
        return False
    return address.teredo is None or all(_is_public_v4(a) for a in address.teredo)


# --- allowed hosts ---------------------------------------------------------------------------


def _is_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """On the registered domain: "douyin.com" allows v.douyin.com, not notdouyin.com."""
    if host.startswith("[") or _ends_in_number(host.rsplit(".", 1)[-1]):
        return False
    return any(_is_under(host, domain) for domain in _ascii_domains(tuple(allowed_hosts)))


@functools.lru_cache(maxsize=16)
def _ascii_domains(entries: tuple[str, ...]) -> tuple[str, ...]:
    domains: list[str] = []
    for entry in entries:
        domain = entry.strip().strip(".").lower()
        # Not a valid name (config validation let it through): compare it as written.
        with contextlib.suppress(ValueError, UnicodeError):
            domain = idna.encode(domain, uts46=True).decode("ascii")
        if domain:
            domains.append(domain)
    return tuple(domains)

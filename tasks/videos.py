"""Which video a link points at: the key under which an earlier extraction is looked up.

``video_key`` turns a link into a short string that is the same for every link to one video
and differs between videos:

* where the link shows the platform's own video id, the key is ``"<platform>:<id>"``, e.g.
  ``"bilibili:BV1xx411c7mD"`` (``"bilibili:BV1xx411c7mD?p=2"`` for another part),
  ``"youtube:dQw4w9WgXcQ"``, ``"douyin:7300000000000000000"``, ``"tiktok:..."``;
* otherwise it is ``"url:"`` and the link written out in one canonical way (see
  ``_normalise``), or ``"url:"`` and the SHA-256 of that when the key would be too long.

Short links (``v.douyin.com/iRNBho6u/``, ``b23.tv/...``, ``xhslink.com/...``) are keyed as they
are: nothing here makes a network request, and short codes are case-sensitive, so paths and ids
are never case-folded. Only the scheme and the host are.

Wrongly merging two videos would answer a user with another video's text, while keeping two
spellings of one video apart only costs one more extraction. So a query parameter is dropped
only where it is known not to change what the page shows: a few tracking names everywhere
(``utm_*``, ``fbclid``...), and each platform's share and tracking names only on that
platform's hosts (``mid`` or ``ts`` may mean something on another site).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_KEY_LENGTH = 255  # storage.models.Task.video_key

# --- query parameters that never change what a page shows ----------------------------------

_TRACKING_PREFIXES = ("utm_",)
# Dropped on every host: these names mean click and share tracking wherever they appear.
_TRACKING_EVERYWHERE = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "igshid",
        "igsh",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "srsltid",
        "_ga",
        "_gl",
        "ref_src",
        "spm_id_from",
        "vd_source",
        "share_source",
        "share_medium",
        "share_plat",
        "share_session_id",
        "share_tag",
    }
)
# Besides those dropped on every host (above).
_BILIBILI_TRACKING = frozenset(
    {
        "spmid",
        "from_spmid",
        "share_from",
        "share_times",
        "unique_k",
        "bbid",
        "buvid",
        "ts",
        "timestamp",
        "is_story_h5",
        "mid",
        "plat_id",
        "up_id",
        "seid",
        "msource",
        "bsource",
        "launch_id",
        "trackid",
        "from_source",
    }
)
_YOUTUBE_TRACKING = frozenset({"si", "feature", "pp", "ab_channel", "app"})
_DOUYIN_TRACKING = frozenset(
    {
        "region",
        "mid",
        "u_code",
        "did",
        "iid",
        "with_sec_did",
        "titletype",
        "share_sign",
        "share_version",
        "share_id",
        "share_from",
        "ts",
        "timestamp",
        "from_aid",
        "from_ssr",
        "app",
        "previous_page",
        "sec_user_id",
        "_r",
        "_t",
    }
)
_TIKTOK_TRACKING = frozenset(
    {
        "_r",
        "_t",
        "is_from_webapp",
        "sender_device",
        "sender_web_id",
        "is_copy_url",
        "web_id",
        "u_code",
        "preview_pb",
        "checksum",
        "share_app_id",
        "share_link_id",
        "share_item_id",
        "share_id",
        "tt_from",
        "timestamp",
        "user_id",
        "sec_uid",
        "sec_user_id",
        "social_sharing",
        "refer",
        "enter_from",
        "enter_method",
        "embed_source",
        "source",
    }
)
_KUAISHOU_TRACKING = frozenset(
    {
        "fid",
        "cc",
        "followrefer",
        "sharemethod",
        "docid",
        "kpn",
        "subbiz",
        "shareid",
        "sharetoken",
        "shareresourcetype",
        "shareobjectid",
        "userid",
        "sharetype",
        "et",
        "sharemode",
        "originshareid",
        "apptype",
        "efid",
        "location",
        "timestamp",
    }
)
# xsec_token is needed to open a note, but it is a per-share token, not part of the note.
_XIAOHONGSHU_TRACKING = frozenset(
    {
        "xsec_token",
        "xsec_source",
        "app_platform",
        "app_version",
        "share_from_user_hidden",
        "author_share",
        "xhsshare",
        "shareredid",
        "apptime",
        "share_id",
        "exsource",
        "source",
        "timestamp",
        "wechatwid",
        "wechatorigin",
    }
)
_IXIGUA_TRACKING = frozenset({"logtag", "wid_try", "is_new_connect", "is_new_user"})
_WEIBO_TRACKING = frozenset({"from", "wm", "sourcetype", "featurecode", "luicode", "lfid"})
_X_TRACKING = frozenset({"s", "t", "ref_url"})  # ref_src is dropped everywhere

# --- video ids ----------------------------------------------------------------------------------

_BV = re.compile(r"[Bb][Vv](1[1-9A-HJ-NP-Za-km-z]{9})")  # "BV1" and nine base58 characters
_AV = re.compile(r"[Aa][Vv]([0-9]{1,19})")
_EPISODE = re.compile(r"ep[0-9]{1,19}")
_PART = re.compile(r"[0-9]{1,9}")
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_YOUTUBE_NOT_IDS = frozenset({"videoseries", "live_stream"})  # /embed/videoseries?list=...
_AWEME_ID = re.compile(r"[0-9]{6,24}")  # Douyin, TikTok and Xigua: 19 digits today
_TIKTOK_HTML = re.compile(r"([0-9]{6,24})\.html")
_KUAISHOU_ID = re.compile(r"[A-Za-z0-9_-]{4,64}")
_NOTE_ID = re.compile(r"[0-9A-Fa-f]{24}")  # Xiaohongshu: a 24-hex-digit object id
_WEIBO_FID = re.compile(r"([0-9]{1,10})(?::|%3A|%3a)([0-9A-Za-z]{1,40})")
_SHORTCODE = re.compile(r"[A-Za-z0-9_-]{8,64}")  # Instagram
_STATUS_ID = re.compile(r"[0-9]{1,25}")
_VIMEO_ID = re.compile(r"[0-9]{1,15}")

# (name, value) as written (escapes normalised), sorted: a repeated name's first value in that
# order is the one read, so the key does not depend on the parameters' order
Query = Sequence[tuple[str, str]]


def _first(query: Query, name: str) -> str | None:
    return next((value for key, value in query if key == name), None)


def _full(pattern: re.Pattern[str], text: str | None) -> re.Match[str] | None:
    return None if text is None else pattern.fullmatch(text)


def _at(segments: Sequence[str], index: int) -> str | None:
    return segments[index] if -len(segments) <= index < len(segments) else None


def _bilibili_id(text: str | None, *, aid: bool = True) -> str | None:
    if (match := _full(_BV, text)) is not None:
        return "BV" + match.group(1)
    if aid and (match := _full(_AV, text)) is not None:
        return f"av{int(match.group(1))}"
    return None


def _bilibili(host: str, segments: Sequence[str], query: Query) -> str | None:
    video: str | None = None
    player = host == "player.bilibili.com"  # the embedded player: ?bvid= or ?aid=, ?page=
    if host in ("b23.tv", "bili2233.cn"):  # short links; "b23.tv/BV1..." carries the id
        # a 7-character short code could read as "av12345", so only a BV id is trusted here
        video = _bilibili_id(_at(segments, 0), aid=False) if len(segments) == 1 else None
        if video is None:
            return None
    elif segments[:1] == ["video"] or segments[:2] == ["s", "video"]:
        video = _bilibili_id(_at(segments, segments.index("video") + 1))
    elif segments[:2] == ["bangumi", "play"] and _full(_EPISODE, _at(segments, 2)):
        return _at(segments, 2)  # an episode; "ss..." is a whole season, not keyed
    if video is None and host != "space.bilibili.com":
        video = _bilibili_id(_first(query, "bvid"), aid=False)  # player, list, festival pages
        if video is None and player:
            aid = _full(_PART, _first(query, "aid"))
            video = None if aid is None else f"av{int(aid.group(0))}"
    if video is None:
        return None
    part = _full(_PART, _first(query, "page" if player else "p"))
    if part is not None and int(part.group(0)) != 1:
        return f"{video}?p={int(part.group(0))}"  # another part is another video
    return video


def _youtube(host: str, segments: Sequence[str], query: Query) -> str | None:
    if host == "youtu.be":
        candidate = _at(segments, 0)
    elif segments == ["watch"]:
        candidate = _first(query, "v")
    elif len(segments) >= 2 and segments[0] in ("shorts", "embed", "live", "v", "e"):
        candidate = segments[1]
    else:
        return None
    if candidate in _YOUTUBE_NOT_IDS or _full(_YOUTUBE_ID, candidate) is None:
        return None
    return candidate


def _douyin(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if len(segments) >= 2 and segments[0] in ("video", "note"):
        candidate = segments[1]
    elif len(segments) >= 3 and segments[:1] == ["share"] and segments[1] in ("video", "note"):
        candidate = segments[2]
    else:  # a video opened over a user, discover, search... page
        candidate = _first(query, "modal_id")
    return candidate if _full(_AWEME_ID, candidate) else None


def _tiktok(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if len(segments) >= 3 and segments[0].startswith("@") and segments[1] in ("video", "photo"):
        candidate = segments[2]
    elif len(segments) >= 2 and segments[0] == "v":
        html = _full(_TIKTOK_HTML, segments[1])
        candidate = html.group(1) if html else segments[1]
    elif segments[:2] in (["embed", "v2"], ["player", "v1"], ["share", "video"]):
        candidate = _at(segments, 2)
    elif segments[:1] == ["embed"]:
        candidate = _at(segments, 1)
    return candidate if _full(_AWEME_ID, candidate) else None


def _kuaishou(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if segments[:1] == ["short-video"]:
        candidate = _at(segments, 1)
    elif segments[:2] == ["fw", "photo"] or (host == "live.kuaishou.com" and segments[:1] == ["u"]):
        candidate = _at(segments, 2)  # a mobile share page; an old web page (/u/<user>/<id>)
    return candidate if _full(_KUAISHOU_ID, candidate) else None


def _xiaohongshu(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if segments[:1] == ["explore"]:
        candidate = _at(segments, 1)
    elif segments[:2] == ["discovery", "item"]:
        candidate = _at(segments, 2)
    elif segments[:2] == ["user", "profile"]:
        candidate = _at(segments, 3)  # a note opened from its author's profile
    return candidate if _full(_NOTE_ID, candidate) else None


def _ixigua(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate = _at(segments, 0) if len(segments) == 1 else None
    return candidate if _full(_AWEME_ID, candidate) else None


def _weibo(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if segments[:2] == ["tv", "show"] or (segments[:1] == ["show"] and "video" in host):
        candidate = _at(segments, segments.index("show") + 1)
    if candidate is None and (segments[:1] == ["tv"] or segments == ["show"]):
        candidate = _first(query, "fid")
    match = _full(_WEIBO_FID, candidate)
    return None if match is None else f"{match.group(1)}:{match.group(2)}"


def _instagram(host: str, segments: Sequence[str], query: Query) -> str | None:
    kinds = ("p", "reel", "reels", "tv")
    if len(segments) >= 2 and segments[0] in kinds:
        candidate: str | None = segments[1]
    elif len(segments) >= 3 and segments[1] in ("p", "reel"):
        candidate = segments[2]  # instagram.com/<user>/reel/<code>/
    else:
        return None
    return candidate if _full(_SHORTCODE, candidate) else None


def _x(host: str, segments: Sequence[str], query: Query) -> str | None:
    for index, segment in enumerate(segments[:3]):
        if segment in ("status", "statuses") and index in (1, 2):
            status = _full(_STATUS_ID, _at(segments, index + 1))
            if status is None:
                return None
            # x.com/<user>/status/<id>/video/2: another video of the same post
            number = _full(_PART, _at(segments, index + 3))
            if _at(segments, index + 2) == "video" and number and int(number.group(0)) != 1:
                return f"{status.group(0)}/video/{int(number.group(0))}"
            return status.group(0)
    return None


def _vimeo(host: str, segments: Sequence[str], query: Query) -> str | None:
    candidate: str | None = None
    if host == "player.vimeo.com":
        candidate = _at(segments, 1) if segments[:1] == ["video"] else None
    elif segments and _full(_VIMEO_ID, segments[0]):
        candidate = segments[0]  # vimeo.com/<id> and vimeo.com/<id>/<unlisted hash>
    elif segments[:1] == ["channels"]:
        candidate = _at(segments, 2)
    elif (segments[:1], _at(segments, 2)) in ((["groups"], "videos"), (["showcase"], "video")):
        candidate = _at(segments, 3)
    return candidate if _full(_VIMEO_ID, candidate) else None


Extractor = Callable[[str, Sequence[str], Query], str | None]


@dataclass(frozen=True)
class _Platform:
    name: str  # the key's prefix
    domains: tuple[str, ...]  # hosts under these (www. already dropped)
    tracking: frozenset[str]  # lower-case query names dropped on these hosts
    video_id: Extractor


_PLATFORMS = (
    _Platform("bilibili", ("bilibili.com", "b23.tv", "bili2233.cn"), _BILIBILI_TRACKING, _bilibili),
    _Platform(
        "youtube",
        ("youtube.com", "youtu.be", "youtube-nocookie.com"),
        _YOUTUBE_TRACKING,
        _youtube,
    ),
    _Platform("douyin", ("douyin.com", "iesdouyin.com"), _DOUYIN_TRACKING, _douyin),
    _Platform("tiktok", ("tiktok.com",), _TIKTOK_TRACKING, _tiktok),
    _Platform(
        "kuaishou",
        ("kuaishou.com", "gifshow.com", "chenzhongtech.com"),
        _KUAISHOU_TRACKING,
        _kuaishou,
    ),
    _Platform(
        "xiaohongshu", ("xiaohongshu.com", "xhslink.com"), _XIAOHONGSHU_TRACKING, _xiaohongshu
    ),
    _Platform("ixigua", ("ixigua.com",), _IXIGUA_TRACKING, _ixigua),
    _Platform("weibo", ("weibo.com", "weibo.cn"), _WEIBO_TRACKING, _weibo),
    _Platform("instagram", ("instagram.com",), frozenset(), _instagram),
    _Platform("x", ("x.com", "twitter.com"), _X_TRACKING, _x),
    _Platform("vimeo", ("vimeo.com",), frozenset(), _vimeo),
)

# --- normalising ---------------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})?")  # an escape, or a "%" that starts none
_UNSAFE = re.compile(r"[^\x21-\x7e]+")  # spaces, controls and anything not ASCII
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PORT = re.compile(r"[0-9]{0,10}")


@dataclass(frozen=True)
class _Link:
    scheme: str
    host: str  # lower case, without "www." and a trailing dot
    port: str  # "" or ":8080"
    path: str  # without a trailing slash
    query: tuple[str, ...]  # the parameters kept ("name=value" or "name"), sorted
    platform: _Platform | None  # the platform whose hosts `host` is under

    def __str__(self) -> str:
        query = "&".join(self.query)
        return f"{self.scheme}://{self.host}{self.port}{self.path}" + (f"?{query}" if query else "")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(name, value) for name, _, value in (p.partition("=") for p in self.query)]


def video_key(link: str) -> str:
    """The key of the video `link` points at: ``"<platform>:<id>"`` where the link shows the
    platform's video id, else ``"url:"`` and the normalised link (or its SHA-256 if that is too
    long). At most 255 characters; the same link always gives the same key; never raises."""
    try:
        return _video_key(link)
    except Exception:  # pragma: no cover - _video_key does not raise; this is a last resort
        digest = hashlib.sha256(link.encode("utf-8", "surrogatepass")).hexdigest()
        return f"url:{digest}"


def _video_key(link: str) -> str:
    parts = _normalise(link)
    if parts.platform is not None:
        segments = [segment for segment in parts.path.split("/") if segment]
        video = parts.platform.video_id(parts.host, segments, parts.pairs)
        if video is not None:
            key = f"{parts.platform.name}:{video}"
            if len(key) <= MAX_KEY_LENGTH:
                return key
    key = f"url:{parts}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "url:" + hashlib.sha256(str(parts).encode("ascii")).hexdigest()


def _platform_of(host: str) -> _Platform | None:
    for platform in _PLATFORMS:
        if any(host == domain or host.endswith("." + domain) for domain in platform.domains):
            return platform
    return None


def _normalise(link: str) -> _Link:
    """`link` written out one way: lower-case scheme (http as https) and host, no user info,
    "www." or trailing dot, no default port, percent-escapes of unreserved characters decoded
    and the others upper-case, anything outside printable ASCII escaped, no fragment, no
    trailing slash, no tracking parameters, the other parameters sorted."""
    text = link.strip()
    match = _SCHEME.match(text)
    if match is not None:
        scheme, rest = match.group(1).lower(), text[match.end() :]
    else:
        scheme, rest = "https", text.removeprefix("//")  # a bare host/path link
    if scheme == "http":
        scheme = "https"  # the same page on every video site
    rest = rest.partition("#")[0]
    before_query, _, raw_query = rest.partition("?")
    slash = before_query.find("/")
    authority, path = (
        (before_query, "") if slash < 0 else (before_query[:slash], before_query[slash:])
    )
    host, port = _split_authority(authority, scheme)
    platform = _platform_of(host)
    dropped = platform.tracking if platform is not None else frozenset()
    kept = []
    for piece in map(_escapes, raw_query.split("&")):
        name = piece.partition("=")[0].lower()
        if not piece or name.startswith(_TRACKING_PREFIXES) or name in _TRACKING_EVERYWHERE:
            continue
        if name not in dropped:
            kept.append(piece)
    return _Link(scheme, host, port, _escapes(path).rstrip("/"), tuple(sorted(kept)), platform)


def _split_authority(authority: str, scheme: str) -> tuple[str, str]:
    """(host, port) from "user@host:port"; the port is "" when absent or the default."""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("[") and "]" in hostport:
        close = hostport.index("]") + 1
        name, after = hostport[:close], hostport[close:]
    else:
        colon = hostport.find(":")
        name, after = (hostport, "") if colon < 0 else (hostport[:colon], hostport[colon:])
    name = _host_part(name).rstrip(".")
    while name.startswith("www.") and "." in name[4:]:
        name = name[4:]
    after = _host_part(after)
    digits = after[1:]
    if after and (after[0] != ":" or _PORT.fullmatch(digits) is None):
        return name + after, ""  # not a port: part of a host that is not a name
    if digits and not (scheme == "https" and int(digits) in (80, 443)):
        return name, f":{int(digits)}"
    return name, ""


def _host_part(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0).upper(), _escapes(text).lower())


def _escapes(text: str) -> str:
    """`text` with escapes of unreserved characters decoded, other escapes in upper case, a "%"
    that starts no escape escaped ("%25"), and characters outside printable ASCII escaped as
    UTF-8. Every "%" left starts an escape, so a decoded character never makes a new one
    ("%4%41" is "%254A", not "%4A"), and normalising twice changes nothing."""

    def escape(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "%25"
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    def encode(match: re.Match[str]) -> str:
        raw = match.group(0).encode("utf-8", "surrogatepass")
        return "".join(f"%{byte:02X}" for byte in raw)

    return _UNSAFE.sub(encode, _PERCENT.sub(escape, text))

"""Which links in a pasted message become tasks, and which are refused and why."""

from __future__ import annotations

import datetime as dt
import ipaddress
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telegram import Chat, Message, MessageEntity

from bot import texts
from bot.links import MAX_URL_LENGTH, LinkRefusal, LinkScan, check_link, links_in, scan_links
from bot.splitting import utf16_len
from simulators.telegram import find_entities

R = LinkRefusal


def message(
    text: str, entities: list[MessageEntity] | None = None, *, caption: bool = False
) -> Message:
    fields: dict[str, object] = (
        {"caption": text, "caption_entities": entities or []}
        if caption
        else {"text": text, "entities": entities or []}
    )
    return Message(
        message_id=1,
        date=dt.datetime.now(dt.UTC),
        chat=Chat(id=1, type=Chat.PRIVATE),
        **fields,  # type: ignore[arg-type]
    )


def from_telegram(text: str, *, caption: bool = False) -> Message:
    """A message with the entities Telegram's server would find in `text`."""
    entities = [MessageEntity(e["type"], e["offset"], e["length"]) for e in find_entities(text)]
    return message(text, entities, caption=caption)


def url_entity(text: str, url: str) -> MessageEntity:
    # Offsets in UTF-16 units, as Telegram sends them.
    offset = utf16_len(text[: text.index(url)])
    return MessageEntity(MessageEntity.URL, offset, utf16_len(url))


# --- real share texts --------------------------------------------------------------------------

SHARE_TEXTS = [
    (
        "7.43 复制打开抖音，看看【某某的作品】今天的视频 "
        "https://v.douyin.com/iRNBho6u/ Mwz:/ 09/27",
        ["https://v.douyin.com/iRNBho6u/"],
    ),
    (
        "9.94 复制打开抖音，看看【某某的作品】# 搞笑 https://v.douyin.com/iRNBho6u/复制此链接，"
        "打开Dou音搜索，直接观看视频！",
        ["https://v.douyin.com/iRNBho6u/"],
    ),
    ("😀😀 看 v.douyin.com/iRNBho6u/ 复制", ["https://v.douyin.com/iRNBho6u/"]),
    ("🔥🔥看这个👉https://v.douyin.com/abc123/ 太好笑了😂", ["https://v.douyin.com/abc123/"]),
    ("【某某的视频-哔哩哔哩】 https://b23.tv/aBcDeF1", ["https://b23.tv/aBcDeF1"]),
    (
        "https://www.bilibili.com/video/BV1xx411c7mD/?share_source=copy_web&vd_source=ab12",
        ["https://www.bilibili.com/video/BV1xx411c7mD/?share_source=copy_web&vd_source=ab12"],
    ),
    (
        "https://v.kuaishou.com/2xYz7Kq 某某发了一个快手作品，一起来看！",
        ["https://v.kuaishou.com/2xYz7Kq"],
    ),
    (
        "82 某某发布了一篇小红书笔记，快来看吧！ 😆 AbCdEf 😆 http://xhslink.com/a/AbC123dEf，"
        "复制本条信息，打开【小红书】App查看精彩内容！",
        ["http://xhslink.com/a/AbC123dEf"],
    ),
    ("https://youtu.be/dQw4w9WgXcQ?si=AbCdEfGh", ["https://youtu.be/dQw4w9WgXcQ?si=AbCdEfGh"]),
    (
        "watch https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s!",
        ["https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s"],
    ),
    (
        "Check out this video! #fyp https://www.tiktok.com/@user.name/video/7234567890123456789"
        "?_r=1&_t=8abc",
        ["https://www.tiktok.com/@user.name/video/7234567890123456789?_r=1&_t=8abc"],
    ),
    ("https://vm.tiktok.com/ZMabc123/", ["https://vm.tiktok.com/ZMabc123/"]),
    (
        "two: https://v.douyin.com/aaa/ and https://b23.tv/bbb, again https://v.douyin.com/aaa/",
        ["https://v.douyin.com/aaa/", "https://b23.tv/bbb"],
    ),
    # Chinese glued right after an ASCII host: the host ends where the Chinese starts.
    ("打开 https://v.douyin.com复制此链接", ["https://v.douyin.com"]),
    # A host in another script is kept whole and sent in ASCII (IDNA).
    ("看 https://www.münchen.de/x 谢谢", ["https://www.xn--mnchen-3ya.de/x"]),
]


@pytest.mark.parametrize(("text", "expected"), SHARE_TEXTS)
def test_share_texts_give_their_video_links(text: str, expected: list[str]) -> None:
    assert scan_links(from_telegram(text)) == LinkScan(links=expected, refused=[])


@pytest.mark.parametrize(("text", "expected"), SHARE_TEXTS)
def test_share_texts_unmarked_by_telegram_give_the_same_links(
    text: str, expected: list[str]
) -> None:
    assert links_in(message(text)) == expected


def test_links_come_from_entities_with_utf16_offsets() -> None:
    text = "😀😀 7.43 复制打开抖音，看看【作品】 https://v.douyin.com/iRNBho6u/ Mwz:/ 09/27"
    url = "https://v.douyin.com/iRNBho6u/"
    assert links_in(message(text, [url_entity(text, url)])) == [url]


def test_text_links_use_their_hidden_url_and_duplicates_count_once() -> None:
    text = "watch this and this https://b23.tv/x"
    entities = [
        MessageEntity(MessageEntity.TEXT_LINK, 6, 4, url="https://b23.tv/x"),
        url_entity(text, "https://b23.tv/x"),
    ]
    assert links_in(message(text, entities)) == ["https://b23.tv/x"]


def test_a_caption_is_read_like_a_text() -> None:
    msg = from_telegram("look 看这个 https://v.douyin.com/cap/ and http://10.0.0.1/x", caption=True)
    assert scan_links(msg) == LinkScan(
        links=["https://v.douyin.com/cap/"], refused=[("http://10.0.0.1/x", R.PRIVATE_ADDRESS)]
    )


def test_unmarked_text_falls_back_to_a_pattern() -> None:
    text = "复制打开 v.douyin.com/abc/ 和 https://b23.tv/def。谢谢"
    assert links_in(message(text)) == ["https://v.douyin.com/abc/", "https://b23.tv/def"]


def test_what_was_refused_is_listed_once_with_its_reason_beside_the_good_links() -> None:
    text = (
        "http://127.0.0.1/admin https://v.douyin.com/a/ http://127.0.0.1/admin "
        "https://user:pw@v.douyin.com/b/ ftp://b23.tv/c"
    )
    assert scan_links(from_telegram(text)) == LinkScan(
        links=["https://v.douyin.com/a/"],
        refused=[
            ("http://127.0.0.1/admin", R.PRIVATE_ADDRESS),
            ("https://user:pw@v.douyin.com/b/", R.CREDENTIALS),
            ("ftp://b23.tv/c", R.NOT_HTTP),
        ],
    )


def test_links_telegram_does_not_mark_are_refused_by_the_fallback() -> None:
    # Telegram marks no link without a dot, so the fallback pattern finds these.
    text = "试试 http://localhost:8080/x 和 http://2130706433/ 和 http://[::1]/y"
    assert scan_links(from_telegram(text)) == LinkScan(
        links=[],
        refused=[
            ("http://localhost:8080/x", R.LOCAL_NAME),
            ("http://2130706433/", R.PRIVATE_ADDRESS),
            ("http://[::1]/y", R.PRIVATE_ADDRESS),
        ],
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "mail me at a.b@c.com",
        "ask @douyin_helper",
        "see file.txt",
        "see readme.md",  # Telegram marks it as a URL: .md is a country
        "example.com is a website",
        "pi is 3.14, half is 1.5/3",
        "/start",
        "复制打开抖音，看看【某某的作品】",
    ],
)
def test_text_that_is_not_a_link_gives_neither_a_link_nor_a_refusal(text: str) -> None:
    assert scan_links(from_telegram(text)) == LinkScan(links=[], refused=[])
    assert scan_links(message(text)) == LinkScan(links=[], refused=[])


# --- one candidate -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://v.douyin.com/iRNBho6u/", "https://v.douyin.com/iRNBho6u/"),
        ("https://v.douyin.com/iRNBho6u/复制此链接", "https://v.douyin.com/iRNBho6u/"),
        ("https://v.douyin.com/a/复制此链接，打开抖音", "https://v.douyin.com/a/"),
        ("https://xhslink.com/a/Xyz，复制本条", "https://xhslink.com/a/Xyz"),
        ("https://b23.tv/x。谢谢", "https://b23.tv/x"),
        ("https://b23.tv/x！", "https://b23.tv/x"),
        ("https://b23.tv/x）", "https://b23.tv/x"),
        (
            "https://www.bilibili.com/video/BV1xx411c7mD).",
            "https://www.bilibili.com/video/BV1xx411c7mD",
        ),
        ("https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)"),
        ("v.douyin.com/abc/", "https://v.douyin.com/abc/"),
        ("HTTPS://V.DOUYIN.COM/AbC", "https://v.douyin.com/AbC"),
        ("https://v.douyin.com./x", "https://v.douyin.com/x"),
        ("https://v.douyin.com:443/x", "https://v.douyin.com/x"),
        ("http://v.douyin.com:80/x", "http://v.douyin.com/x"),
        ("https://v.douyin.com:8443/x", "https://v.douyin.com:8443/x"),
        ("v.douyin.com:443/x", "https://v.douyin.com/x"),
        ("https:/v.douyin.com/x", "https://v.douyin.com/x"),  # a browser reads it so
        # Chinese glued to the host or port is text, not part of the host.
        ("https://v.douyin.com复制此链接", "https://v.douyin.com"),
        ("https://v.douyin.com:443复制", "https://v.douyin.com"),
        ("复制打开v.douyin.com/abc/", "https://v.douyin.com/abc/"),
        # Hosts in other scripts are kept whole and written in ASCII.
        ("https://www.münchen.de/x", "https://www.xn--mnchen-3ya.de/x"),
        ("https://www.xn--mnchen-3ya.de/x", "https://www.xn--mnchen-3ya.de/x"),
        ("https://www.gооgle.com/", "https://www.xn--ggle-55da.com/"),  # Cyrillic о
        ("https://例子.中国/x", "https://xn--fsqu00a.xn--fiqs8s/x"),
        ("https://example.café/x", "https://example.xn--caf-dma/x"),
        ("https://ＷＷＷ.Ｂ２３.ｔｖ/x", "https://www.b23.tv/x"),
        # A backslash ends the host for a browser; the rest is not part of the link.
        ("https://v.douyin.com\\@127.0.0.1/", "https://v.douyin.com"),
        ("http://8.8.8.8/v.mp4", "http://8.8.8.8/v.mp4"),
        ("http://[2001:4860:4860:0::8888]/v", "http://[2001:4860:4860::8888]/v"),
    ],
)
def test_check_link_gives_the_clean_link(raw: str, expected: str) -> None:
    assert check_link(raw) == expected
    assert check_link(expected) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://b23.tv/file", R.NOT_HTTP),
        ("javascript:alert(1)", R.NOT_HTTP),
        ("tg://resolve?domain=x", R.NOT_HTTP),
        ("file:///etc/passwd", R.NOT_HTTP),
        ("https://v.douyin.com/" + "a" * 3000, R.TOO_LONG),
        ("https://" + "a" * 3000 + ".com/", R.TOO_LONG),
        ("https://user:pw@v.douyin.com/x", R.CREDENTIALS),
        ("https://user@v.douyin.com/x", R.CREDENTIALS),
        ("https://@v.douyin.com/x", R.CREDENTIALS),
        ("https://v.douyin.com%40evil.com/x", R.MALFORMED),
        ("http://localhost/", R.LOCAL_NAME),
        ("http://localhost:8080/", R.LOCAL_NAME),
        ("localhost:8080/x", R.LOCAL_NAME),
        ("http://LOCALHOST./", R.LOCAL_NAME),
        ("http://api.localhost/", R.LOCAL_NAME),
        ("http://printer.local/", R.LOCAL_NAME),
        ("http://metadata.google.internal/computeMetadata/v1/", R.LOCAL_NAME),
        ("http://router.home.arpa/", R.LOCAL_NAME),
        ("http://1.0.0.127.in-addr.arpa/", R.LOCAL_NAME),
        ("http://video.test/x", R.LOCAL_NAME),
        ("http://video.invalid/x", R.LOCAL_NAME),
        ("http://video.example/x", R.LOCAL_NAME),
        ("http://duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion/", R.LOCAL_NAME),
        ("http://intranet/x", R.LOCAL_NAME),
        ("http://%6c%6fcalhost/", R.LOCAL_NAME),
        ("http://ｌｏｃａｌｈｏｓｔ/", R.LOCAL_NAME),
        ("http://127.0.0.1/x", R.PRIVATE_ADDRESS),
        ("http://127.1/", R.PRIVATE_ADDRESS),
        ("http://2130706433/", R.PRIVATE_ADDRESS),
        ("http://0x7f000001/", R.PRIVATE_ADDRESS),
        ("http://0x7f.1/", R.PRIVATE_ADDRESS),
        ("http://0177.0.0.1/", R.PRIVATE_ADDRESS),
        ("http://0/", R.PRIVATE_ADDRESS),
        ("http://127.0.0.1./", R.PRIVATE_ADDRESS),
        ("http://１２７.０.０.１/", R.PRIVATE_ADDRESS),
        ("http://127%2e0%2e0%2e1/", R.PRIVATE_ADDRESS),
        ("http://127。0。0。1/", R.PRIVATE_ADDRESS),  # the link ends at "。": host "127"
        ("http:\\\\127.0.0.1\\x", R.PRIVATE_ADDRESS),
        ("https://10.0.0.1/", R.PRIVATE_ADDRESS),
        ("https://172.16.5.4/", R.PRIVATE_ADDRESS),
        ("https://192.168.1.1/", R.PRIVATE_ADDRESS),
        ("http://169.254.169.254/latest/meta-data/", R.PRIVATE_ADDRESS),
        ("http://100.64.0.1/", R.PRIVATE_ADDRESS),
        ("http://100.100.100.200/", R.PRIVATE_ADDRESS),
        ("http://224.0.0.1/", R.PRIVATE_ADDRESS),
        ("http://255.255.255.255/", R.PRIVATE_ADDRESS),
        ("http://[::1]/", R.PRIVATE_ADDRESS),
        ("http://[::]/", R.PRIVATE_ADDRESS),
        ("http://[::ffff:127.0.0.1]/", R.PRIVATE_ADDRESS),
        ("http://[::ffff:7f00:1]/", R.PRIVATE_ADDRESS),
        ("http://[64:ff9b::10.0.0.1]/", R.PRIVATE_ADDRESS),
        ("http://[64:ff9b::a9fe:a9fe]/", R.PRIVATE_ADDRESS),
        ("http://[2002:7f00:1::]/", R.PRIVATE_ADDRESS),  # 6to4 of 127.0.0.1
        ("http://[2002:a9fe:a9fe::1]/", R.PRIVATE_ADDRESS),  # 6to4 of 169.254.169.254
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", R.PRIVATE_ADDRESS),  # Teredo
        ("http://[fe80::1]/", R.PRIVATE_ADDRESS),
        ("http://[fd00:ec2::254]/", R.PRIVATE_ADDRESS),
        ("http://[ff02::1]/", R.PRIVATE_ADDRESS),
        ("http://10.0.0.1.nip.io/", R.PRIVATE_ADDRESS),
        ("http://[fe80::1%25eth0]/", R.MALFORMED),
        ("http://[::1/", R.MALFORMED),
        ("http://999.1.1.1/", R.MALFORMED),
        ("http://1.2.3.4.5/", R.MALFORMED),
        ("http://0x100000000/", R.MALFORMED),
        ("https://my_site.com/", R.MALFORMED),
        ("https://-bad.com/", R.MALFORMED),
        ("https://a..com/", R.MALFORMED),
        ("https://v.douyin.com:notaport/", R.MALFORMED),
        ("https://v.douyin.com:99999/", R.MALFORMED),
        ("https://%ff.com/", R.MALFORMED),
        ("https://☃.com/", R.MALFORMED),
        ("https://v.douyin.c/x", R.MALFORMED),
        ("http://", R.MALFORMED),
    ],
)
def test_check_link_refuses_with_a_reason(raw: str, reason: LinkRefusal) -> None:
    assert check_link(raw) == reason


def test_the_length_limit_counts_the_link_as_sent() -> None:
    base = "https://v.douyin.com/"
    assert check_link(base + "a" * (MAX_URL_LENGTH - len(base))) == base + "a" * (
        MAX_URL_LENGTH - len(base)
    )
    assert check_link(base + "a" * (MAX_URL_LENGTH - len(base) + 1)) == R.TOO_LONG
    # The host grows when it is written in ASCII: the link as sent is what must fit.
    idn, sent = "https://münchen.de/", "https://xn--mnchen-3ya.de/"
    assert check_link(idn + "a" * (MAX_URL_LENGTH - len(idn))) == R.TOO_LONG
    fits = "a" * (MAX_URL_LENGTH - len(sent))
    assert check_link(idn + fits) == sent + fits


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [
        ("https://v.douyin.com/x/", True),
        ("https://douyin.com/x/", True),
        ("https://www.iesdouyin.com/share/video/1/", True),
        ("https://b23.tv/x", True),
        ("https://notdouyin.com/x/", False),
        ("https://douyin.com.evil.com/x/", False),
        ("https://youtu.be/x", False),
        ("http://8.8.8.8/x", False),
        ("https://www.münchen.de/x", True),
    ],
)
def test_allowed_hosts_match_on_the_registered_domain(raw: str, allowed: bool) -> None:
    hosts = ["douyin.com", "iesdouyin.com", "b23.tv", "münchen.de"]
    result = check_link(raw, allowed_hosts=hosts)
    assert (result == check_link(raw)) if allowed else (result == R.HOST_NOT_ALLOWED)


def test_allowed_hosts_never_let_a_private_link_through() -> None:
    assert check_link("http://127.0.0.1/", allowed_hosts=["douyin.com"]) == R.PRIVATE_ADDRESS
    text = "https://v.douyin.com/a/ https://youtu.be/b"
    assert scan_links(from_telegram(text), allowed_hosts=["douyin.com"]) == LinkScan(
        links=["https://v.douyin.com/a/"], refused=[("https://youtu.be/b", R.HOST_NOT_ALLOWED)]
    )


# --- what the user reads -----------------------------------------------------------------------


def test_every_refusal_has_a_plain_sentence() -> None:
    assert set(texts.LINK_REFUSED) == {reason.value for reason in LinkRefusal}
    for reason in LinkRefusal:
        sentence = texts.LINK_REFUSED[reason.value]
        assert sentence[0].isupper() and sentence.endswith(".")
        text = texts.DEFAULT.link_refused(reason.value)
        assert sentence in text and "link" in text
        assert "_" not in text  # no enum names leak to the user
    assert texts.DEFAULT.link_refused("something_new").startswith("That link can't be used.")


# --- properties --------------------------------------------------------------------------------

FRAGMENTS = [
    "https://",
    "http://",
    "://",
    "HTTP://",
    ".",
    "/",
    "@",
    ":",
    "%",
    "[",
    "]",
    "\\",
    "?",
    "#",
    ")",
    " ",
    "\n",
    "\x00",
    "v.douyin.com",
    "b23.tv",
    "localhost",
    "127",
    "0x7f",
    "0177",
    "::1",
    "::ffff:",
    "复制",
    "链接",
    "，",
    "。",
    "！",
    "ü",
    "о",
    "ß",
    "xn--",
    "１",
    "⒈",
    "%2e",
    "%6c",
    "%e5%a4%8d",
    "com",
    "中国",
    "0",
    "1",
    "255",
    "443",
    "a" * 70,
]
url_like_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=25
).map("".join)
any_text = st.one_of(st.text(max_size=200), url_like_text)


def assert_usable(link: str) -> None:
    """A link that may go to Coze: http(s), short enough, ASCII host, public, read the same
    way by other parsers, and accepted again as it is."""
    assert link.startswith(("http://", "https://"))
    assert len(link) <= MAX_URL_LENGTH
    assert link.isascii() and not any(ch.isspace() or ch == "\\" for ch in link)
    assert check_link(link) == link
    parts = urlsplit(link)
    host = parts.hostname
    assert host and parts.username is None and parts.password is None
    assert httpx.URL(link).raw_host.decode("ascii") == host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        assert "." in host and not host.endswith((".localhost", ".local", ".internal"))
    else:
        assert not (address.is_private or address.is_loopback or address.is_link_local)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_text)
def test_any_text_never_raises_and_every_link_is_usable(text: str) -> None:
    for msg in (message(text), from_telegram(text), from_telegram(text, caption=True)):
        scan = scan_links(msg)
        assert len(set(scan.links)) == len(scan.links)
        for link in scan.links:
            assert_usable(link)
        for _, reason in scan.refused:
            assert reason in LinkRefusal
    result = check_link(text)
    if isinstance(result, str) and not isinstance(result, LinkRefusal):
        assert_usable(result)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet="abcxyz09-üö中文оаß", min_size=1, max_size=8),
            st.sampled_from(["com", "cn", "tv", "中国", "рф", "xn--p1ai", "1", "0x7f"]),
        ),
        min_size=1,
        max_size=4,
    ).map(".".join),
    st.sampled_from(["https://", "http://", "", "HTTPS://", "http:\\\\"]),
    st.sampled_from(["", ":443", ":8080", ":0", ":65536", ":x"]),
    st.text(alphabet="abc/?=&%#.()，。复制！", max_size=20),
)
def test_a_link_built_from_pieces_is_usable_or_refused(
    host: str, scheme: str, port: str, rest: str
) -> None:
    result = check_link(scheme + host + port + rest)
    if not isinstance(result, LinkRefusal):
        assert_usable(result)


@settings(max_examples=300, deadline=None)
@given(any_text.filter(lambda t: "." not in t and "://" not in t))  # FRAGMENTS: "。", "%2e"...
def test_text_without_a_dot_or_scheme_gives_no_links(text: str) -> None:
    assert links_in(message(text)) == []
    assert links_in(from_telegram(text)) == []


OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Short forms fill the last part: "127.1" is 127.0.0.1 but "172.16" is 172.0.0.16 (public),
# so only the first line uses them.
PRIVATE_REGEXES = [
    rf"https?://(127|10|0)(\.{OCTET}){{0,3}}",
    rf"https?://192\.168(\.{OCTET}){{2}}",
    rf"https?://172\.(1[6-9]|2[0-9]|3[01])(\.{OCTET}){{2}}",
    rf"https?://169\.254(\.{OCTET}){{2}}",
    rf"https?://100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])(\.{OCTET}){{2}}",
    rf"https?://(22[4-9]|23[0-9]|24[0-9]|25[0-5])(\.{OCTET}){{3}}",
    r"https?://0[xX]7[fF](\.(0[xX][0-9a-fA-F]{1,2}|[0-9]{1,2})){0,3}",
    r"https?://0[xX]0?[aA](\.(0[xX][0-9a-fA-F]{1,2}|0[0-7]{1,3})){0,3}",
    r"https?://0{1,3}177(\.0{1,4}){0,2}\.0*1",
    r"https?://\[(::1|::|::ffff:(127|10)\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|::ffff:7f[0-9a-f]{2}"
    r":[0-9a-f]{1,4}|64:ff9b::(a[0-9a-f]{2}|7f[0-9a-f]{2}|a9fe):[0-9a-f]{1,4}|fe80::[0-9a-f]{1,4}"
    r"|f[cd][0-9a-f]{2}::[0-9a-f]{1,4}|2002:(7f|a)[0-9a-f]{2}:[0-9a-f]{1,4}::[0-9a-f]{0,4})\]",
    r"https?://([a-z0-9]{1,8}\.){0,2}(localhost|local|internal|home\.arpa|test|invalid|onion"
    r"|example|google\.internal)\.?",
    r"[Hh][Tt][Tt][Pp][Ss]?://[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]\.?",
]
DECIMAL_PRIVATE = [
    (0x7F000000, 0x7FFFFFFF),
    (0x0A000000, 0x0AFFFFFF),
    (0xC0A80000, 0xC0A8FFFF),
    (0xAC100000, 0xAC1FFFFF),
    (0xA9FE0000, 0xA9FEFFFF),
    (0x64400000, 0x647FFFFF),
]


def percent_encoded(host: str) -> st.SearchStrategy[str]:
    def encode(flags: list[bool]) -> str:
        return "".join(
            f"%{ord(ch):02x}" if flag else ch for ch, flag in zip(host, flags, strict=True)
        )

    return st.lists(st.booleans(), min_size=len(host), max_size=len(host)).map(encode)


private_base = st.one_of(
    *[st.from_regex(regex, fullmatch=True) for regex in PRIVATE_REGEXES],
    st.one_of(*[st.integers(low, high) for low, high in DECIMAL_PRIVATE]).map(
        lambda n: f"http://{n}"
    ),
    st.one_of(
        percent_encoded("localhost"),
        percent_encoded("127.0.0.1"),
        percent_encoded("169.254.169.254"),
    ).map(lambda host: f"http://{host}"),
)
private_link = st.tuples(
    private_base, st.sampled_from(["", ":80", ":8080"]), st.sampled_from(["", "/", "/x?a=1"])
).map("".join)


@settings(max_examples=500, deadline=None)
@given(private_link)
def test_private_addresses_in_any_spelling_are_always_refused(link: str) -> None:
    assert isinstance(check_link(link), LinkRefusal)
    assert isinstance(check_link(link, allowed_hosts=["douyin.com"]), LinkRefusal)
    for msg in (message(f"看看 {link} 谢谢"), from_telegram(f"看看 {link} 谢谢")):
        assert scan_links(msg).links == []

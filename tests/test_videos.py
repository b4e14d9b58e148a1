"""The key of the video a link points at: one key per video, whatever the share text's link."""

from __future__ import annotations

import hashlib
import socket
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks import videos
from tasks.videos import MAX_KEY_LENGTH, video_key

BV = "BV1xx411c7mD"
YT = "dQw4w9WgXcQ"
AWEME = "7300000000000000000"
TIKTOK = "6718335390845095173"
NOTE = "64a1b2c3d4e5f6a7b8c9d0e1"


# --- one video, many links -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "links"),
    [
        (
            f"bilibili:{BV}",
            [
                f"https://www.bilibili.com/video/{BV}/",
                f"https://www.bilibili.com/video/{BV}/?spm_id_from=333.337.search-card.all.click"
                "&vd_source=0123456789abcdef0123456789abcdef",
                f"https://www.bilibili.com/video/{BV}?share_source=copy_web&share_medium=android"
                "&bbid=XY0&ts=1700000000000&unique_k=AbCdEf&up_id=123&plat_id=116&buvid=XY1",
                f"https://m.bilibili.com/video/{BV}?p=1&is_story_h5=false&mid=abc&share_plat=android",
                f"http://bilibili.com/video/{BV}#reply123",
                f"https://WWW.BILIBILI.COM/video/{BV}",
                f"https://www.bilibili.com/s/video/{BV}",
                "https://www.bilibili.com/video/bv1xx411c7mD",
                f"https://player.bilibili.com/player.html?bvid={BV}&autoplay=0",
                f"https://www.bilibili.com/list/watchlater?bvid={BV}&oid=170001",
                f"https://b23.tv/{BV}",
            ],
        ),
        (
            f"bilibili:{BV}?p=2",
            [
                f"https://www.bilibili.com/video/{BV}?p=2",
                f"https://m.bilibili.com/video/{BV}/?p=02&share_source=copy_web",
                f"https://www.bilibili.com/video/{BV}/?vd_source=abc&p=2#t=30",
                f"https://player.bilibili.com/player.html?bvid={BV}&page=2&high_quality=1",
            ],
        ),
        (
            "bilibili:av170001",
            [
                "https://www.bilibili.com/video/av170001",
                "https://www.bilibili.com/video/AV170001/?spm_id_from=333.999",
                "https://player.bilibili.com/player.html?aid=170001&page=1",
            ],
        ),
        ("bilibili:ep12345", ["https://www.bilibili.com/bangumi/play/ep12345?from_spmid=666.25"]),
        (
            f"youtube:{YT}",
            [
                f"https://www.youtube.com/watch?v={YT}",
                f"https://youtu.be/{YT}?si=AbCdEfGhIjKlMnOp",
                f"https://www.youtube.com/watch?v={YT}&feature=share",
                f"https://youtube.com/watch?feature=youtu.be&v={YT}&t=42s&list=PL0123",
                f"https://m.youtube.com/watch?v={YT}&pp=ygUEcmljaw%3D%3D",
                f"https://music.youtube.com/watch?v={YT}&si=xyz",
                f"https://youtube.com/shorts/{YT}?feature=share",
                f"https://www.youtube.com/shorts/{YT}/",
                f"https://www.youtube.com/embed/{YT}?start=10",
                f"https://www.youtube-nocookie.com/embed/{YT}",
                f"https://www.youtube.com/live/{YT}?si=abc",
                f"http://YOUTU.BE/{YT}#t=1m",
            ],
        ),
        (
            f"douyin:{AWEME}",
            [
                f"https://www.douyin.com/video/{AWEME}",
                f"https://www.iesdouyin.com/share/video/{AWEME}/?region=CN&mid=7299999999999999999"
                "&u_code=0&did=MS4wLjABAAAA&iid=MS4wLjABAAAA&with_sec_did=1&titleType=title"
                "&share_sign=abc&share_version=280700&ts=1700000000&from_aid=1128&from_ssr=1",
                f"https://www.douyin.com/user/MS4wLjABAAAAxyz?modal_id={AWEME}",
                f"https://www.douyin.com/discover?modal_id={AWEME}",
                f"https://www.douyin.com/note/{AWEME}",
                f"https://douyin.com/video/{AWEME}?previous_page=app_code_link",
            ],
        ),
        (
            f"tiktok:{TIKTOK}",
            [
                f"https://www.tiktok.com/@scout2015/video/{TIKTOK}",
                f"https://www.tiktok.com/@scout2015/video/{TIKTOK}?is_from_webapp=1"
                "&sender_device=pc&web_id=7300000000000000001",
                f"https://www.tiktok.com/@someone.else/video/{TIKTOK}?_r=1&_t=8abcDEF",
                f"https://m.tiktok.com/v/{TIKTOK}.html",
                f"https://www.tiktok.com/embed/v2/{TIKTOK}",
            ],
        ),
        (
            "kuaishou:3xg9avuebhtfcku",
            [
                "https://www.kuaishou.com/short-video/3xg9avuebhtfcku?authorId=3xabc"
                "&streamSource=find",
                "https://v.m.chenzhongtech.com/fw/photo/3xg9avuebhtfcku?fid=0&cc=share_copylink"
                "&followRefer=151&shareMethod=TOKEN&kpn=KUAISHOU&shareId=123&userId=3xabc",
            ],
        ),
        (
            f"xiaohongshu:{NOTE}",
            [
                f"https://www.xiaohongshu.com/explore/{NOTE}",
                f"https://www.xiaohongshu.com/explore/{NOTE}?xsec_token=ABcd1234=&xsec_source=pc_share",
                f"https://www.xiaohongshu.com/discovery/item/{NOTE}?app_platform=ios"
                "&app_version=8.0&share_from_user_hidden=true&type=video&author_share=1",
                f"https://www.xiaohongshu.com/user/profile/5f0000000000000000000001/{NOTE}",
            ],
        ),
        ("ixigua:7300000000000000002", ["https://www.ixigua.com/7300000000000000002?logTag=ab"]),
        (
            "weibo:1034:4880209191862305",
            [
                "https://weibo.com/tv/show/1034:4880209191862305?from=old_pc_videoshow",
                "https://video.weibo.com/show?fid=1034%3A4880209191862305",
                "https://h5.video.weibo.com/show/1034:4880209191862305",
            ],
        ),
        (
            "instagram:C0AbCdEfGhI",
            [
                "https://www.instagram.com/reel/C0AbCdEfGhI/?igsh=MWQ1ZGUxMzBkMA==",
                "https://www.instagram.com/p/C0AbCdEfGhI/",
                "https://www.instagram.com/someone/reel/C0AbCdEfGhI/?utm_source=ig_web_copy_link",
            ],
        ),
        (
            "x:1700000000000000000",
            [
                "https://x.com/someone/status/1700000000000000000?s=20&t=AbCd",
                "https://twitter.com/someone/status/1700000000000000000/video/1",
                "https://mobile.twitter.com/i/web/status/1700000000000000000",
            ],
        ),
        (
            "vimeo:76979871",
            ["https://vimeo.com/76979871", "https://player.vimeo.com/video/76979871"],
        ),
        (
            "url:https://v.douyin.com/iRNBho6u",
            [
                "https://v.douyin.com/iRNBho6u/",
                "https://v.douyin.com/iRNBho6u",
                "http://V.Douyin.COM:80/iRNBho6u/#top",
                "https://v.douyin.com:443/iRNBho6u/?utm_source=copy&share_id=1&u_code=2",
            ],
        ),
        (
            "url:https://b23.tv/AbCdEfG",
            [
                "https://b23.tv/AbCdEfG",
                "https://b23.tv/AbCdEfG?share_medium=android&share_source=weixin&bbid=XY"
                "&ts=1700000000",
            ],
        ),
        (
            "url:https://xhslink.com/a/AbCdEfGhIjK",
            ["http://xhslink.com/a/AbCdEfGhIjK", "https://xhslink.com/a/AbCdEfGhIjK/?xhsshare=1"],
        ),
        (
            "url:https://example.com/a/b?a=1&b=2",
            [
                "https://example.com/a/b/?b=2&a=1",
                "HTTPS://WWW.Example.COM/a/b?a=1&b=2&utm_source=newsletter&fbclid=xyz#section-2",
                "https://user@example.com./a/%62?&a=%31&&b=2",
            ],
        ),
    ],
)
def test_every_link_to_one_video_gives_its_key(key: str, links: list[str]) -> None:
    assert [video_key(link) for link in links] == [key] * len(links)


@pytest.mark.parametrize(
    "links",
    [
        pytest.param(
            [
                f"https://www.bilibili.com/video/{BV}",
                f"https://www.bilibili.com/video/{BV}?p=2",
                f"https://www.bilibili.com/video/{BV}?p=3",
                "https://www.bilibili.com/video/BV1xx411c7mE",
                "https://www.bilibili.com/video/av170001",
                "https://www.bilibili.com/video/av170002",
                "https://www.bilibili.com/bangumi/play/ss12345",
            ],
            id="bilibili ids, parts, av and BV kept apart",
        ),
        pytest.param(
            [
                f"https://youtu.be/{YT}",
                "https://youtu.be/dQw4w9WgXcq",  # ids are case-sensitive
                "https://www.youtube.com/embed/videoseries?list=PL0123",
                "https://www.youtube.com/embed/videoseries?list=PL0124",
            ],
            id="youtube",
        ),
        pytest.param(
            [
                "https://v.douyin.com/iRNBho6u/",
                "https://v.douyin.com/irnbho6u/",
                "https://v.douyin.com/IRNBHO6U/",
                "https://b23.tv/AbCdEfG",
                "https://b23.tv/abcdefg",
                "https://xhslink.com/a/AbCdEfGhIjK",
                "https://xhslink.com/a/abcdefghijk",
                "https://v.kuaishou.com/AbCdEf",
                "https://vm.tiktok.com/ZMabcDEF/",
                "https://vm.tiktok.com/ZMABCDEF/",
            ],
            id="short-link codes differing only in case",
        ),
        pytest.param(
            [
                f"https://www.douyin.com/video/{AWEME}",
                f"https://www.tiktok.com/@a/video/{AWEME}",
                f"https://www.ixigua.com/{AWEME}",
                "https://www.douyin.com/video/7300000000000000001",
            ],
            id="one number on different platforms",
        ),
        pytest.param(
            [
                "https://x.com/a/status/1700000000000000000",
                "https://x.com/a/status/1700000000000000000/video/2",
            ],
            id="another video of the same post",
        ),
        pytest.param(
            [
                "https://example.com/watch?id=1",
                "https://example.com/watch?id=2",
                "https://example.com/Watch?id=1",
                "https://example.com/watch?id=1&mid=5",  # "mid" is only dropped on platforms
                "https://example.com/watch?id=1&ts=5",
                "https://example.com/watch?id=1&si=5",
                "https://example.com:8443/watch?id=1",
                "https://example.org/watch?id=1",
                "ftp://example.com/watch?id=1",
            ],
            id="unknown sites: path case, content parameters, port, host, scheme",
        ),
    ],
)
def test_different_videos_give_different_keys(links: list[str]) -> None:
    keys = [video_key(link) for link in links]
    assert len(set(keys)) == len(keys), keys


def test_a_tracking_name_is_dropped_only_on_its_platform() -> None:
    assert video_key("https://b23.tv/AbCdEfG?mid=1&ts=2") == "url:https://b23.tv/AbCdEfG"
    assert video_key("https://example.com/v?mid=1&ts=2") == "url:https://example.com/v?mid=1&ts=2"
    assert video_key("https://youtube.com/@chan?si=1&feature=2") == "url:https://youtube.com/@chan"
    assert video_key("https://example.com/v?si=1") == "url:https://example.com/v?si=1"


def test_the_normalised_link_keeps_the_path_and_parameter_values_as_written() -> None:
    assert (
        video_key("https://Example.com:8080/%7eUser/%e4%b8%ad/Video?Q=%41b%2fC&q=zz")
        == "url:https://example.com:8080/~User/%E4%B8%AD/Video?Q=Ab%2FC&q=zz"
    )
    assert video_key("https://example.com/путь?q=文") == (
        "url:https://example.com/%D0%BF%D1%83%D1%82%D1%8C?q=%E6%96%87"
    )
    assert video_key("example.com/v/1") == "url:https://example.com/v/1"  # bare host/path
    assert video_key("https://www.com/") == "url:https://www.com"  # "www." of a name only


@pytest.mark.parametrize(
    ("link", "key"),
    [
        ("https://example.com/%4%41", "url:https://example.com/%254A"),  # not "%4A" then "J"
        ("https://example.com/a%zz", "url:https://example.com/a%25zz"),
        ("https://example.com:%38%30/a", "url:https://example.com/a"),  # an escaped port
        ("https://example.com:abc./a", "url:https://example.com:abc./a"),
        (":.", "url:https://:."),
        ("https://[2001:DB8::1]:8080/a", "url:https://[2001:db8::1]:8080/a"),
        ("https://www.www.example.com/", "url:https://example.com"),
        ("", "url:https://"),
    ],
)
def test_odd_links_have_a_stable_normal_form(link: str, key: str) -> None:
    assert video_key(link) == key
    assert video_key(key.removeprefix("url:")) == key


def test_a_too_long_key_is_the_hash_of_the_normalised_link() -> None:
    path = "/" + "A" * 300
    key = video_key(f"http://Example.com{path}/?utm_source=x#frag")
    normalised = f"https://example.com{path}"
    assert key == "url:" + hashlib.sha256(normalised.encode()).hexdigest()
    assert key == video_key(f"https://example.com{path}")
    assert key != video_key(f"https://example.com/{'A' * 299}B")
    assert len(video_key("https://example.com/" + "x" * 2048)) <= MAX_KEY_LENGTH


def test_short_links_are_never_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("video_key made a network call")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    links = [
        "https://v.douyin.com/iRNBho6u/",
        "https://b23.tv/AbCdEfG",
        "https://xhslink.com/a/AbCdEfGhIjK",
        "https://v.kuaishou.com/AbCdEf",
        "https://vm.tiktok.com/ZMabcDEF/",
        "https://vt.tiktok.com/ZSabcDEF/",
    ]
    assert [video_key(link) for link in links] == ["url:" + link.rstrip("/") for link in links]


# --- properties ----------------------------------------------------------------------------

_REAL_LINKS = [
    f"https://www.bilibili.com/video/{BV}/",
    f"https://www.bilibili.com/video/{BV}?p=2",
    f"https://youtu.be/{YT}",
    f"https://www.youtube.com/watch?v={YT}",
    f"https://www.iesdouyin.com/share/video/{AWEME}/",
    f"https://www.douyin.com/discover?modal_id={AWEME}",
    f"https://www.tiktok.com/@scout2015/video/{TIKTOK}",
    "https://v.douyin.com/iRNBho6u/",
    "https://b23.tv/AbCdEfG",
    f"https://www.xiaohongshu.com/explore/{NOTE}",
    "https://weibo.com/tv/show/1034:4880209191862305",
]
_HOSTS = [
    "example.com",
    "www.example.org",
    "Sub.Example.NET",
    "www.bilibili.com",
    "b23.tv",
    "v.douyin.com",
    "www.youtube.com",
    "youtu.be",
    "www.tiktok.com",
    "xhslink.com",
    "127.0.0.1",
    "[2001:db8::1]",
]
_URL_CHARS = string.ascii_letters + string.digits + "-._~!$'()*+,;=:@%"
_segments = st.lists(st.text(_URL_CHARS, max_size=12), max_size=4)
_param = st.tuples(
    st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8),
    st.text(_URL_CHARS + "/?", max_size=10),
)
_params = st.lists(_param, max_size=4)


def _url(scheme: str, host: str, segments: list[str], params: list[tuple[str, str]]) -> str:
    path = "".join("/" + segment for segment in segments)
    query = "&".join(f"{name}={value}" for name, value in params)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


_generated = st.builds(
    _url, st.sampled_from(["http", "https"]), st.sampled_from(_HOSTS), _segments, _params
)
_real = st.builds(
    lambda link, params: (
        link + ("&" if "?" in link else "?") + "&".join(f"{n}={v}" for n, v in params)
    ),
    st.sampled_from(_REAL_LINKS),
    _params,
)
_links = st.one_of(_generated, _real)


def _add_query(link: str, name: str, value: str, at: int) -> str:
    base, _, query = link.partition("?")
    pieces = query.split("&") if query else []
    pieces.insert(at % (len(pieces) + 1), f"{name}={value}")
    return base + "?" + "&".join(pieces)


@given(st.text())
def test_never_raises_and_the_key_is_short_printable_ascii(text: str) -> None:
    key = videos._video_key(text)  # without the last-resort guard of video_key
    assert key == video_key(text) == video_key(text)
    assert len(key) <= MAX_KEY_LENGTH
    assert key.isascii() and key.isprintable() and " " not in key


@given(st.text(string.printable + "\u4e2d\u00e9\ud800", min_size=240, max_size=2100))
def test_long_text_never_gives_a_long_key(text: str) -> None:
    assert len(videos._video_key("https://example.com/" + text)) <= MAX_KEY_LENGTH


@given(
    _links,
    st.text(string.ascii_letters + string.digits + "_", max_size=10),
    st.text(_URL_CHARS + "/?", max_size=10),
    st.integers(min_value=0, max_value=10),
    st.sampled_from(["utm_", "UTM_", "Utm_"]),
)
def test_a_utm_parameter_never_changes_the_key(
    link: str, suffix: str, value: str, at: int, prefix: str
) -> None:
    assert video_key(_add_query(link, prefix + suffix, value, at)) == video_key(link)


@given(_links, st.text(max_size=30))
def test_a_fragment_never_changes_the_key(link: str, fragment: str) -> None:
    assert video_key(f"{link}#{fragment}") == video_key(link)


@given(_links)
def test_scheme_host_case_and_a_trailing_slash_never_change_the_key(link: str) -> None:
    scheme, _, rest = link.partition("://")
    end = min(i for i in (rest.find("/"), rest.find("?"), len(rest)) if i >= 0)
    other_scheme = "https" if scheme == "http" else "http"
    assert video_key(f"{other_scheme}://{rest}") == video_key(link)
    assert video_key(f"{scheme}://{rest[:end].upper()}{rest[end:]}") == video_key(link)
    base, question, query = link.partition("?")
    assert video_key(f"{base}/{question}{query}") == video_key(link)


@given(st.one_of(_links, st.text()))
def test_the_normalised_link_is_its_own_normal_form(link: str) -> None:
    key = video_key(link)
    if key.startswith("url:") and "://" in key:  # not a hash
        assert video_key(key.removeprefix("url:")) == key


@given(_links, _params)
def test_reordering_parameters_never_changes_the_key(
    link: str, params: list[tuple[str, str]]
) -> None:
    forward = link
    for name, value in params:
        forward = _add_query(forward, name, value, 10**6)
    backward = link
    for name, value in reversed(params):
        backward = _add_query(backward, name, value, 10**6)
    assert video_key(forward) == video_key(backward)

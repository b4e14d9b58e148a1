"""The fake Telegram Bot API server, driven by a real python-telegram-bot `Bot`."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import telegram
from aiohttp import web
from telegram import (
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BotCommandScopeChatAdministrators,
    BotCommandScopeChatMember,
    BotDescription,
    BotName,
    BotShortDescription,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    ReplyParameters,
)
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import filters

from simulators.telegram import (
    FakeTelegram,
    SentMessage,
    TelegramDelay,
    TelegramFault,
    UploadedFile,
    find_entities,
    utf16_len,
)

USER = 42
DOUYIN_SHARE = (
    "7.43 复制打开抖音，看看【某某的作品】今天的视频 https://v.douyin.com/iRNBho6u/ Mwz:/ 09/27"
)


@pytest_asyncio.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(tg.token, base_url=tg.api_base_url) as client:
        yield client


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in pairs]])


def seconds(value: int | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


# ------------------------------------------------------------------ basics


@pytest.mark.asyncio
async def test_get_me_is_called_with_an_empty_body(tg: FakeTelegram, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert me.id == 123456
    assert me.is_bot
    assert me.username == "link2text_test_bot"
    assert me.can_join_groups is True
    assert tg.calls[0] == ("getMe", {})


@pytest.mark.asyncio
async def test_wrong_token_and_unknown_method(tg: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with telegram.Bot("999:WRONG", base_url=tg.api_base_url):
            pass
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{tg.url}/bot999:WRONG/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"{tg.api_base_url}{tg.token}/noSuchMethod") as response:
            assert response.status == 404
            assert (await response.json())["description"] == "Not Found"


@pytest.mark.asyncio
async def test_raw_form_and_json_bodies_are_decoded(tg: FakeTelegram) -> None:
    tg.user_sends(USER, "hi")
    markup = {"inline_keyboard": [[{"text": "Retry", "callback_data": "retry:7"}]]}
    async with aiohttp.ClientSession() as http:
        form = {"chat_id": "42", "text": "123", "reply_markup": json.dumps(markup)}
        async with http.post(f"{tg.api_base_url}{tg.token}/sendMessage", data=form) as response:
            body = await response.json()
        assert response.status == 200 and body["ok"] is True
        assert body["result"]["text"] == "123"  # a string field stays a string
        assert body["result"]["reply_markup"] == markup
        payload = {"chat_id": USER, "text": "json body"}
        async with http.post(f"{tg.api_base_url}{tg.token}/sendmessage", json=payload) as response:
            assert (await response.json())["result"]["text"] == "json body"
    assert tg.calls[-2] == ("sendMessage", {"chat_id": 42, "text": "123", "reply_markup": markup})
    assert [m.text for m in tg.messages(USER)] == ["123", "json body"]


# ------------------------------------------------------------------ sending


@pytest.mark.asyncio
async def test_reply_with_inline_keyboard_round_trips(tg: FakeTelegram, bot: telegram.Bot) -> None:
    incoming = tg.user_sends(USER, "https://v.douyin.com/iRNBho6u/")
    message = await bot.send_message(
        USER,
        "Accepted, working on it",
        reply_parameters=ReplyParameters(incoming["message_id"]),
        reply_markup=keyboard(("Retry", "retry:1"), ("Cancel", "cancel:1")),
    )
    assert message.reply_to_message is not None
    assert message.reply_to_message.message_id == incoming["message_id"]
    assert message.reply_to_message.text == incoming["text"]
    assert message.from_user is not None and message.from_user.id == 123456
    assert message.reply_markup == keyboard(("Retry", "retry:1"), ("Cancel", "cancel:1"))
    assert message.entities == ()

    [sent] = tg.messages(USER)
    assert sent == SentMessage(
        message_id=message.message_id,
        chat_id=USER,
        text="Accepted, working on it",
        parse_mode=None,
        reply_to_message_id=incoming["message_id"],
        reply_markup={
            "inline_keyboard": [
                [
                    {"text": "Retry", "callback_data": "retry:1"},
                    {"text": "Cancel", "callback_data": "cancel:1"},
                ]
            ]
        },
        date=sent.date,
    )
    assert sent.buttons() == [("Retry", "retry:1"), ("Cancel", "cancel:1")]
    method, params = tg.calls[-1]
    assert method == "sendMessage" and "parse_mode" not in params
    assert params["reply_parameters"] == {"message_id": incoming["message_id"]}


@pytest.mark.asyncio
async def test_old_reply_to_message_id_and_missing_reply_target(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    incoming = tg.user_sends(USER, "hello")
    await bot.send_message(USER, "ok", reply_to_message_id=incoming["message_id"])
    assert tg.messages(USER)[-1].reply_to_message_id == incoming["message_id"]
    with pytest.raises(BadRequest, match=r"^Message to be replied not found$"):
        await bot.send_message(USER, "x", reply_parameters=ReplyParameters(999_999))
    await bot.send_message(
        USER, "y", reply_parameters=ReplyParameters(999_999, allow_sending_without_reply=True)
    )
    assert [m.text for m in tg.messages(USER)] == ["ok", "y"]
    assert tg.messages(USER)[-1].reply_to_message_id is None


@pytest.mark.asyncio
async def test_text_limits_count_utf16_code_units(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(USER, "a" * 4097)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "😀" * 2049)  # 2049 characters, 4098 UTF-16 code units
    await bot.send_message(USER, "😀" * 2048)
    await bot.send_message(USER, "a" * 4096)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(USER, " \n ")
    assert [utf16_len(m.text or "") for m in tg.messages(USER)] == [4096, 4096]


@pytest.mark.asyncio
async def test_plain_text_is_recorded_without_parse_mode_and_trimmed(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    message = await bot.send_message(USER, "\n<b>not markup</b> see https://example.com/a \n")
    [sent] = tg.messages(USER)
    assert sent.parse_mode is None
    assert sent.text == "<b>not markup</b> see https://example.com/a"
    assert message.parse_entities() == {message.entities[0]: "https://example.com/a"}


@pytest.mark.asyncio
async def test_html_parse_mode(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    message = await bot.send_message(USER, "<b>标题</b> 1 &lt; 2 & 😀 <i>x</i>", parse_mode="HTML")
    assert message.text == "标题 1 < 2 & 😀 x"
    assert message.parse_entities() == {
        MessageEntity("bold", 0, 2): "标题",
        MessageEntity("italic", 14, 1): "x",
    }
    assert tg.messages(USER)[0].parse_mode == "HTML"
    with pytest.raises(BadRequest, match=r"Can't parse entities: unsupported start tag \"foo\""):
        await bot.send_message(USER, "a <foo> b", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Can't parse entities: can't find end tag"):
        await bot.send_message(USER, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Can't parse entities: unmatched end tag"):
        await bot.send_message(USER, "<b>x</i>", parse_mode="HTML")
    assert len(tg.messages(USER)) == 1


@pytest.mark.asyncio
async def test_markdown_parse_modes_are_refused_as_not_implemented(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    for mode in ("MarkdownV2", "Markdown", "markdownv2"):
        with pytest.raises(
            BadRequest, match=rf"(?i)^parse_mode {mode} is not implemented by this fake"
        ):
            await bot.send_message(USER, "*bold*", parse_mode=mode)
        with pytest.raises(BadRequest, match="is not implemented by this fake"):
            await bot.send_document(
                USER, document=b"x", filename="a.txt", caption="c", parse_mode=mode
            )
    async with aiohttp.ClientSession() as http:
        form = {"chat_id": str(USER), "text": "_x_", "parse_mode": "MarkdownV2"}
        async with http.post(f"{tg.api_base_url}{tg.token}/sendMessage", data=form) as response:
            assert response.status == 400
            assert await response.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: parse_mode MarkdownV2 is not implemented by this "
                "fake Telegram server (only HTML and plain text are)",
            }
    assert tg.messages(USER) == []


@pytest.mark.asyncio
async def test_button_data_is_checked(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(USER, "x", reply_markup=keyboard(("Retry", "r" * 65)))
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(USER, "x", reply_markup=keyboard(("Retry", "")))
    await bot.send_message(USER, "x", reply_markup=keyboard(("Retry", "我" * 21)))  # 63 bytes
    assert len(tg.messages(USER)) == 1


@pytest.mark.asyncio
async def test_unknown_chat_and_blocked_user(tg: FakeTelegram, bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(777, "hello")
    tg.user_sends(USER, "hi")
    tg.block(USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "hello")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(USER, "typing")
    assert tg.messages(USER) == []
    tg.unblock(USER)
    await bot.send_chat_action(USER, "typing")


@pytest.mark.asyncio
async def test_send_document_records_filename_and_content(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    content = "很长的文字\n".encode() * 100
    message = await bot.send_document(USER, document=content, filename="text.txt", caption="全文")
    assert message.document is not None
    assert message.document.file_name == "text.txt"
    assert message.document.file_size == len(content)
    assert message.document.mime_type == "text/plain"
    assert message.caption == "全文"
    [sent] = tg.messages(USER)
    assert (sent.document, sent.filename, sent.text) == (content, "text.txt", "全文")
    method, params = tg.calls[-1]
    assert method == "sendDocument" and isinstance(params["document"], UploadedFile)
    assert params["document"].filename == "text.txt"
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_document(USER, document=b"x", filename="a.txt", caption="c" * 1025)
    again = await bot.send_document(USER, document=message.document.file_id)
    assert tg.messages(USER)[-1].document == content
    assert again.document is not None and again.document.file_name == "text.txt"


# ------------------------------------------------------------------ faults


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_fail_next_429_raises_retry_after(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    tg.fail_next(
        "sendMessage", status=429, description="Too Many Requests: retry after 3", retry_after=3
    )
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "first")
    assert seconds(caught.value.retry_after) == 3
    await bot.send_message(USER, "second")  # only the next call failed
    assert [m.text for m in tg.messages(USER)] == ["second"]
    assert [m for m, _ in tg.calls].count("sendMessage") == 2


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_bot_wide_limit_refuses_past_the_rate_but_not_polling(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    tg.max_requests_per_second = 3
    for n in range(3):
        await bot.send_message(USER, f"m{n}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "over")
    assert seconds(caught.value.retry_after) == 1
    assert tg.over_limit == 1 and len(tg.counted_calls) == 3
    await bot.get_me()  # start-up and polling are never counted
    await bot.get_updates(timeout=0)
    assert tg.over_limit == 1 and len(tg.counted_calls) == 3
    assert [m.text for m in tg.messages(USER)] == ["m0", "m1", "m2"]


@pytest.mark.asyncio
async def test_fail_next_403_and_count(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    tg.fail_next("sendMessage", status=403, description="Forbidden: user is deactivated", count=2)
    for _ in range(2):
        with pytest.raises(Forbidden, match="user is deactivated"):
            await bot.send_message(USER, "x")
    await bot.send_message(USER, "y")
    assert [m.text for m in tg.messages(USER)] == ["y"]


@pytest.mark.asyncio
async def test_delay_next_times_out_the_client_but_delivers(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    tg.delay_next("sendMessage", 1.0)
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await bot.send_message(USER, "slow", read_timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert [m.text for m in tg.messages(USER)] == ["slow"]


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_fault_hook_fault_is_answered_and_counted(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    seen: list[tuple[str, object]] = []
    faults = [TelegramFault(429, "Too Many Requests: retry after 2", retry_after=2)]

    def hook(method: str, params: dict[str, object]) -> TelegramFault | TelegramDelay | None:
        seen.append((method, params.get("text")))
        return faults.pop(0) if faults else None

    tg.fault_hook = hook
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "first")
    assert seconds(caught.value.retry_after) == 2
    await bot.send_message(USER, "second")
    tg.fail_next("sendMessage", status=403, description="Forbidden: user is deactivated")
    with pytest.raises(Forbidden):  # a queued fault wins; the hook is not consulted
        await bot.send_message(USER, "third")
    assert [m.text for m in tg.messages(USER)] == ["second"]  # the faulted call was not performed
    assert seen == [("sendmessage", "first"), ("sendmessage", "second")]
    assert tg.injected_faults == {"sendmessage": 1}
    assert tg.injected_delays == {}


@pytest.mark.asyncio
async def test_fault_hook_spares_reliable_methods(tg: FakeTelegram, bot: telegram.Bot) -> None:
    seen: list[str] = []

    def hook(method: str, params: dict[str, object]) -> TelegramFault:
        seen.append(method)
        return TelegramFault(500, "Internal Server Error")

    tg.user_sends(USER, "hi")
    await bot.send_message(USER, "pick", reply_markup=keyboard(("Retry", "retry:1")))
    [sent] = tg.messages(USER)
    query_id = tg.user_presses(USER, sent, "retry:1")
    tg.fault_hook = hook
    await bot.get_me()
    await bot.delete_webhook()
    await bot.set_my_commands([("start", "Start")])
    updates = await bot.get_updates(timeout=0)
    assert len(updates) == 2
    assert await bot.answer_callback_query(query_id, text="ok")
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.send_chat_action(USER, "typing")
    assert seen == ["sendchataction"]
    assert tg.injected_faults == {"sendchataction": 1}


@pytest.mark.asyncio
async def test_fault_hook_delay_after_stores_the_message(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    tg.fault_hook = lambda method, params: TelegramDelay(0.3) if method == "sendmessage" else None
    with pytest.raises(TimedOut):
        await bot.send_message(USER, "slow", read_timeout=0.1)
    assert [m.text for m in tg.messages(USER)] == ["slow"]  # stored before the reply was held
    assert tg.held_replies == 1
    assert tg.injected_delays == {"sendmessage": 1} and tg.injected_faults == {}
    await tg.wait_for(lambda: tg.held_replies == 0, timeout=2)


@pytest.mark.asyncio
async def test_client_gone_during_held_reply_is_harmless(
    tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    tg.user_sends(USER, "hi")
    tg.fault_hook = lambda method, params: (
        TelegramDelay(0.3, before=True) if params.get("text") == "late" else None
    )
    url = f"{tg.api_base_url}{tg.token}/sendMessage"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TimeoutError):
            async with http.post(
                url,
                json={"chat_id": USER, "text": "late"},
                timeout=aiohttp.ClientTimeout(total=0.05),
            ):
                pass
        assert tg.messages(USER) == []  # still held before the call is performed
        # The handler is not cancelled by the disconnect (aiohttp's handler_cancellation is
        # off): the call completes after the hold and the message is stored.
        await tg.wait_for(lambda: tg.held_replies == 0, timeout=2)
        assert [m.text for m in tg.messages(USER)] == ["late"]
        async with http.post(url, json={"chat_id": USER, "text": "next"}) as response:
            assert response.status == 200
    assert [m.text for m in tg.messages(USER)] == ["late", "next"]
    assert not [r for r in caplog.records if r.levelno >= 40]


# ------------------------------------------------------------------ edits


@pytest.mark.asyncio
async def test_edits_and_not_modified(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    message = await bot.send_message(USER, "Working…", reply_markup=keyboard(("Cancel", "c:1")))
    edited = await bot.edit_message_text("Done", chat_id=USER, message_id=message.message_id)
    assert isinstance(edited, telegram.Message) and edited.edit_date is not None
    [sent] = tg.messages(USER)
    assert (sent.text, sent.edits, sent.reply_markup) == ("Done", 1, None)  # keyboard dropped
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Done", chat_id=USER, message_id=message.message_id)
    await bot.edit_message_reply_markup(
        USER, message.message_id, reply_markup=keyboard(("Retry", "r:1"))
    )
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_reply_markup(
            USER, message.message_id, reply_markup=keyboard(("Retry", "r:1"))
        )
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999_999)
    with pytest.raises(BadRequest, match="Message_too_long"):
        await bot.edit_message_text("x" * 4097, chat_id=USER, message_id=message.message_id)
    assert (sent.edits, sent.buttons()) == (2, [("Retry", "r:1")])

    document = await bot.send_document(USER, document=b"x", filename="a.txt", caption="Old")
    with pytest.raises(BadRequest, match="There is no text in the message to edit"):
        await bot.edit_message_text("New", chat_id=USER, message_id=document.message_id)
    with pytest.raises(BadRequest, match="There is no caption in the message to edit"):
        await bot.edit_message_caption(USER, message.message_id, caption="New")
    edited = await bot.edit_message_caption(
        USER, document.message_id, caption="<b>New</b>", parse_mode="HTML"
    )
    assert isinstance(edited, telegram.Message)
    assert (edited.caption, edited.caption_entities) == ("New", (MessageEntity("bold", 0, 3),))
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_caption(
            USER, document.message_id, caption="<b>New</b>", parse_mode="HTML"
        )
    with pytest.raises(BadRequest, match="Media_caption_too_long"):
        await bot.edit_message_caption(USER, document.message_id, caption="c" * 1025)
    doc_sent = tg.messages(USER)[-1]
    assert (doc_sent.text, doc_sent.edits, doc_sent.parse_mode) == ("New", 1, "HTML")


@pytest.mark.asyncio
async def test_delete_message(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    first = await bot.send_message(USER, "one")
    await bot.send_message(USER, "two")
    assert await bot.delete_message(USER, first.message_id) is True
    assert [m.text for m in tg.messages(USER)] == ["two"]
    assert [m.text for m in tg.deleted_messages(USER)] == ["one"]
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(USER, first.message_id)


# ------------------------------------------------------------------ updates


@pytest.mark.asyncio
async def test_share_text_entities_give_the_exact_url(tg: FakeTelegram, bot: telegram.Bot) -> None:
    emoji_text = "🔥🔥看这个👉https://v.douyin.com/abc123/ 太好笑了😂"
    tg.user_sends(USER, DOUYIN_SHARE)
    tg.user_sends(USER, emoji_text, first_name="Бо", username="bo")
    tg.user_sends(USER, "😀 看 v.douyin.com/iRNBho6u/ 复制", as_caption=True)
    updates = await bot.get_updates()
    assert len(updates) == 3
    first, second, third = (u.effective_message for u in updates)
    assert first is not None and second is not None and third is not None
    urls: list[str | None] = [MessageEntity.URL, MessageEntity.TEXT_LINK]
    assert list(first.parse_entities(urls).values()) == ["https://v.douyin.com/iRNBho6u/"]
    assert list(second.parse_entities(urls).values()) == ["https://v.douyin.com/abc123/"]
    assert second.from_user is not None and second.from_user.username == "bo"
    assert second.entities[0].offset == 9  # three emoji before the link count twice each
    assert third.caption is not None and third.photo
    assert list(third.parse_caption_entities(urls).values()) == ["v.douyin.com/iRNBho6u/"]


def test_server_side_entity_rules() -> None:
    def found(text: str) -> list[tuple[str, str]]:
        units = text.encode("utf-16-le")
        return [
            (
                e["type"],
                units[e["offset"] * 2 : (e["offset"] + e["length"]) * 2].decode("utf-16-le"),
            )
            for e in find_entities(text)
        ]

    assert found("/start abc") == [("bot_command", "/start")]
    assert found("/help@link2text_test_bot x") == [("bot_command", "/help@link2text_test_bot")]
    # Telegram glues CJK text that follows a link without a space into the link
    assert found("https://v.douyin.com/a/复制此链接，打开") == [
        ("url", "https://v.douyin.com/a/复制此链接，打开")
    ]
    assert found("see example.com, then www.b23.tv/x.") == [
        ("url", "example.com"),
        ("url", "www.b23.tv/x"),
    ]
    assert found("7.43 version 1.2 file.txtx") == []
    assert found("mail me: ann@example.org") == [("email", "ann@example.org")]


@pytest.mark.asyncio
async def test_bot_command_entity(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "/start")
    tg.user_sends(USER, "/start", auto_entities=False)
    first, second = await bot.get_updates()
    assert first.message is not None and second.message is not None
    assert first.message.entities == (MessageEntity("bot_command", 0, 6),)
    assert second.message.entities == ()


@pytest.mark.asyncio
async def test_offset_confirms_updates(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "one")
    tg.user_sends(USER, "two")
    updates = await bot.get_updates()
    assert [u.message.text for u in updates if u.message] == ["one", "two"]
    assert updates[1].update_id > updates[0].update_id
    assert tg.pending_updates() == 2  # not confirmed yet
    again = await bot.get_updates(limit=1)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[-1].update_id + 1) == ()
    assert tg.pending_updates() == 0


@pytest.mark.asyncio
async def test_long_poll_returns_as_soon_as_an_update_arrives(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=dtm.timedelta(seconds=0.3)) == ()
    assert 0.25 < time.monotonic() - started < 1.5

    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    started = time.monotonic()
    tg.user_sends(USER, "wake up")
    updates = await asyncio.wait_for(poll, 2)
    assert time.monotonic() - started < 1.0
    assert [u.message.text for u in updates if u.message] == ["wake up"]


@pytest.mark.asyncio
async def test_a_second_poller_terminates_the_first(tg: FakeTelegram, bot: telegram.Bot) -> None:
    async with telegram.Bot(tg.token, base_url=tg.api_base_url) as other:
        first = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(other.get_updates(timeout=0))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await asyncio.wait_for(first, 2)
        assert await second == ()


@pytest.mark.asyncio
async def test_callback_query_round_trip(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    await bot.send_message(USER, "Result", reply_markup=keyboard(("Retry", "retry:9")))
    [sent] = tg.messages(USER)
    query_id = tg.user_presses(USER, sent, sent.buttons()[0][1])
    forged_id = tg.user_presses(USER, sent, "retry:other-users-task")
    await tg.wait_for(lambda: tg.pending_updates() == 3, timeout=1)
    updates = await bot.get_updates(offset=-2)
    query = updates[0].callback_query
    assert query is not None
    assert (query.id, query.data, query.from_user.id) == (query_id, "retry:9", USER)
    assert query.message is not None and query.message.message_id == sent.message_id
    assert updates[1].callback_query is not None
    assert updates[1].callback_query.data == "retry:other-users-task"

    with pytest.raises(BadRequest, match="Message_too_long"):
        await bot.answer_callback_query(query_id, text="x" * 201)
    assert await bot.answer_callback_query(query_id, text="Retrying…") is True
    assert tg.callback_answers[query_id]["text"] == "Retrying…"
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query("123")
    await bot.answer_callback_query(forged_id, text="Not yours", show_alert=True)
    assert tg.callback_answers[forged_id]["show_alert"] is True


@pytest.mark.asyncio
async def test_wait_for_sees_sends_from_another_task(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await bot.send_message(USER, "one")
        await bot.send_message(USER, "two")

    task = asyncio.create_task(later())
    await tg.wait_for(lambda: len(tg.messages(USER)) >= 2, timeout=2)
    await task
    with pytest.raises(TimeoutError):
        await tg.wait_for(lambda: len(tg.messages(USER)) >= 3, timeout=0.1)


@pytest.mark.asyncio
async def test_webhook_mode_delivers_with_the_secret(tg: FakeTelegram, bot: telegram.Bot) -> None:
    received: list[tuple[str | None, dict[str, object]]] = []
    failures = [500]

    async def hook(request: web.Request) -> web.Response:
        if failures:
            return web.Response(status=failures.pop())
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/telegram", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/telegram"
        assert await bot.set_webhook(url, secret_token="s3cret")
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates()
        tg.user_sends(USER, "via webhook")
        await tg.wait_for(lambda: len(received) == 1, timeout=2)
        secret, update = received[0]
        assert secret == "s3cret"
        assert update["message"]["text"] == "via webhook"  # type: ignore[index]
        info = await bot.get_webhook_info()
        assert info.url == url and info.pending_update_count == 0
        assert (
            info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        )
        assert await bot.delete_webhook()
        assert await bot.get_updates() == ()
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize(("sent", "kept"), [(None, 40), (7, 7), (0, 1), (500, 100)])
async def test_webhook_max_connections_defaults_to_40_and_is_clamped(
    tg: FakeTelegram, bot: telegram.Bot, sent: int | None, kept: int
) -> None:
    assert await bot.set_webhook("http://127.0.0.1:9/telegram", max_connections=sent)
    assert (await bot.get_webhook_info()).max_connections == kept
    assert await bot.delete_webhook()


@pytest.mark.asyncio
async def test_stop_releases_a_pending_long_poll() -> None:
    fake = FakeTelegram()
    await fake.start()
    async with telegram.Bot(fake.token, base_url=fake.api_base_url) as client:
        poll = asyncio.create_task(client.get_updates(timeout=30))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 2
        done, _ = await asyncio.wait({poll}, timeout=2)
        assert poll in done
        assert poll.exception() is not None or poll.result() == ()


# ------------------------------------------------------------------ groups

GROUP = -4001234567  # a basic group
SUPERGROUP = -1001234567890
MEMBER = 43
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Link2Text Test Bot"}


def test_mentions_as_tdlib_finds_them() -> None:
    def found(text: str) -> list[tuple[str, int, str]]:
        units = text.encode("utf-16-le")
        return [
            (
                e["type"],
                e["offset"],
                units[e["offset"] * 2 : (e["offset"] + e["length"]) * 2].decode("utf-16-le"),
            )
            for e in find_entities(text)
        ]

    assert found("@link2text_test_bot https://v.douyin.com/x/") == [
        ("mention", 0, "@link2text_test_bot"),
        ("url", 20, "https://v.douyin.com/x/"),
    ]
    # offsets in UTF-16 units: the emoji counts twice; punctuation ends a mention
    assert found("😀@Link2Text_Test_Bot, hi") == [("mention", 2, "@Link2Text_Test_Bot")]
    # too short unless TDLib knows the name; glued to a word before or after: no mention
    assert found("@abc @gif @abcde") == [("mention", 5, "@gif"), ("mention", 10, "@abcde")]
    assert found("ann@example.org @bot_name的 @" + "a" * 33) == [("email", 0, "ann@example.org")]
    # a command for a bot is one bot_command entity, not a command and a mention
    assert found("/status@link2text_test_bot 3") == [
        ("bot_command", 0, "/status@link2text_test_bot")
    ]
    # inside a link, the link wins
    assert found("https://example.com/@someone") == [("url", 0, "https://example.com/@someone")]


@pytest.mark.asyncio
async def test_group_messages_replies_and_the_bots_own_messages(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    first = tg.user_sends_in_group(GROUP, USER, "hello all", title="Video club", username="ann")
    assert first["chat"] == {
        "id": GROUP,
        "title": "Video club",
        "type": "group",
        "all_members_are_administrators": True,
    }
    answer = await bot.send_message(
        GROUP, "hello Ann", reply_parameters=ReplyParameters(first["message_id"])
    )
    assert answer.chat.type == "group" and answer.chat.title == "Video club"
    [sent] = tg.messages(GROUP)
    assert (sent.chat_id, sent.reply_to_message_id) == (GROUP, first["message_id"])
    assert tg.messages(USER) == []
    reply = tg.user_sends_in_group(
        GROUP,
        MEMBER,
        "@link2text_test_bot 看 https://v.douyin.com/x/ 😀",
        first_name="Bo",
        reply_to_message_id=sent.message_id,
    )
    # reply_to_message is the bot's message without its own reply_to_message
    assert reply["reply_to_message"]["from"]["id"] == tg.bot_id
    assert "reply_to_message" not in reply["reply_to_message"]
    with pytest.raises(ValueError, match="no message"):
        tg.user_sends_in_group(GROUP, USER, "x", reply_to_message_id=999_999)

    updates = await bot.get_updates()
    assert len(updates) == 2
    hello, mention = (u.message for u in updates)
    assert hello is not None and mention is not None
    assert hello.chat.id == GROUP and hello.from_user is not None
    assert hello.from_user.username == "ann"
    assert mention.from_user is not None and mention.from_user.id == MEMBER
    assert mention.reply_to_message is not None
    assert mention.reply_to_message.message_id == sent.message_id
    assert mention.reply_to_message.text == "hello Ann"
    assert mention.reply_to_message.reply_to_message is None
    assert mention.parse_entities() == {
        MessageEntity("mention", 0, 19): "@link2text_test_bot",
        MessageEntity("url", 22, 23): "https://v.douyin.com/x/",
    }

    super_first = tg.user_sends_in_group(SUPERGROUP, USER, "hi", title="Big")
    assert super_first["chat"] == {"id": SUPERGROUP, "title": "Big", "type": "supergroup"}
    with pytest.raises(ValueError, match="negative"):
        tg.user_sends_in_group(5, USER, "hi")


@pytest.mark.asyncio
async def test_app_entities_are_kept_and_the_server_adds_its_own(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    mention = {"type": "text_mention", "offset": 0, "length": 3, "user": BOT_USER}
    tg.user_sends_in_group(GROUP, USER, "Bot, see https://b23.tv/x", entities=[mention])
    tg.user_sends_in_group(
        GROUP, USER, "Bot: https://b23.tv/y", entities=[mention], auto_entities=False
    )
    tg.user_sends_in_group(GROUP, USER, "@link2text_test_bot https://b23.tv/z", as_caption=True)
    first, second, third = (u.message for u in await bot.get_updates())
    assert first is not None and second is not None and third is not None
    assert [e.type for e in first.entities] == ["text_mention", "url"]
    assert first.entities[0].user is not None and first.entities[0].user.id == tg.bot_id
    assert [e.type for e in second.entities] == ["text_mention"]
    assert third.photo and list(third.parse_caption_entities().values()) == [
        "@link2text_test_bot",
        "https://b23.tv/z",
    ]


@pytest.mark.asyncio
async def test_service_messages_parse_as_ptb_expects(tg: FakeTelegram, bot: telegram.Bot) -> None:
    pinned = tg.user_sends_in_group(GROUP, USER, "look https://b23.tv/pin")
    tg.group_event(GROUP, "new_chat_members", user_id=MEMBER, first_name="Bo")
    tg.group_event(GROUP, "new_chat_members", [44, 45], user_id=USER)
    tg.group_event(GROUP, "left_chat_member", 45, user_id=USER)
    tg.group_event(GROUP, "pinned_message", pinned["message_id"], user_id=USER)
    tg.group_event(GROUP, "video_chat_started", user_id=USER)
    tg.group_event(GROUP, "video_chat_ended", user_id=USER)
    tg.group_event(GROUP, "new_chat_title", "Renamed", user_id=USER)
    tg.group_event(GROUP, "message_auto_delete_timer_changed", user_id=USER)
    tg.group_event(GROUP, "group_chat_created", user_id=USER)
    tg.group_event(SUPERGROUP, "forum_topic_created", user_id=USER)
    with pytest.raises(ValueError, match="needs a value"):
        tg.group_event(GROUP, "something_new", user_id=USER)
    with pytest.raises(ValueError, match="supergroups only"):
        tg.group_event(GROUP, "forum_topic_created", user_id=USER)
    with pytest.raises(ValueError, match="no message"):
        tg.group_event(GROUP, "pinned_message", 999_999, user_id=USER)

    updates = await bot.get_updates()
    messages = [u.message for u in updates[1:]]
    assert all(m is not None for m in messages)
    joined, added, left, pin, started, ended, title, timer, created, topic = messages
    assert joined is not None and [u.id for u in joined.new_chat_members] == [MEMBER]
    assert joined.api_kwargs["new_chat_participant"]["id"] == MEMBER  # the legacy field
    assert added is not None and [u.id for u in added.new_chat_members] == [44, 45]
    assert left is not None and left.left_chat_member is not None
    assert left.left_chat_member.id == 45
    assert pin is not None and isinstance(pin.pinned_message, telegram.Message)
    assert pin.pinned_message.text == "look https://b23.tv/pin"
    assert started is not None and started.video_chat_started is not None
    assert ended is not None and ended.video_chat_ended is not None
    assert title is not None and title.new_chat_title == "Renamed"
    assert title.chat.title == "Renamed"
    assert timer is not None and timer.message_auto_delete_timer_changed is not None
    assert created is not None and created.group_chat_created
    assert topic is not None and topic.forum_topic_created is not None
    assert topic.is_topic_message and topic.message_thread_id == topic.message_id
    assert topic.chat.is_forum
    for message in messages:
        assert message is not None and message.text is None
        assert filters.StatusUpdate.ALL.check_update(telegram.Update(0, message=message))
    later = tg.user_sends_in_group(GROUP, MEMBER, "hi")
    assert later["chat"]["title"] == "Renamed"


@pytest.mark.asyncio
async def test_a_group_upgraded_to_a_supergroup(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends_in_group(GROUP, USER, "hi", title="Club")
    old = tg.group_event(GROUP, "migrate_to_chat_id", user_id=USER)
    new_id = old["migrate_to_chat_id"]
    assert new_id == -1004001234567
    updates = await bot.get_updates()
    to_message, from_message = (u.message for u in updates[1:])
    assert to_message is not None and from_message is not None
    assert (to_message.chat.id, to_message.migrate_to_chat_id) == (GROUP, new_id)
    assert (from_message.chat.id, from_message.chat.type) == (new_id, "supergroup")
    assert (from_message.chat.title, from_message.migrate_from_chat_id) == ("Club", GROUP)
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(GROUP, "hello")
    assert caught.value.new_chat_id == new_id
    await bot.send_message(new_id, "hello")
    assert [m.text for m in tg.messages(new_id)] == ["hello"]
    with pytest.raises(ValueError, match="became the supergroup"):
        tg.user_sends_in_group(GROUP, USER, "hi")
    tg.user_sends_in_group(new_id, USER, "hi again")  # the members moved with it


@pytest.mark.asyncio
async def test_a_bot_removed_from_a_group(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends_in_group(GROUP, USER, "hi")
    tg.group_event(GROUP, "left_chat_member", tg.bot_id, user_id=USER)
    tg.user_sends_in_group(GROUP, USER, "not seen")
    updates = await bot.get_updates()
    assert [u.message.text if u.message else None for u in updates] == ["hi", None]
    assert updates[1].message is not None and updates[1].message.left_chat_member is not None
    with pytest.raises(Forbidden, match="bot was kicked from the group chat"):
        await bot.send_message(GROUP, "hello")
    tg.group_event(GROUP, "new_chat_members", [tg.bot_id], user_id=USER)
    await bot.send_message(GROUP, "back")
    assert [m.text for m in tg.messages(GROUP)] == ["back"]


@pytest.mark.asyncio
async def test_bots_anonymous_admins_and_inline_bots(tg: FakeTelegram, bot: telegram.Bot) -> None:
    other = tg.other_bot_sends_in_group(SUPERGROUP, 777, "I am a bot https://b23.tv/bot")
    assert tg.pending_updates() == 0  # Telegram never shows a bot another bot's messages
    tg.user_sends_in_group(SUPERGROUP, USER, "reply to it", reply_to_message_id=other["message_id"])
    tg.user_sends_in_group(SUPERGROUP, USER, "as the group", anonymous_admin=True)
    inline_bot = {"id": 888, "is_bot": True, "first_name": "Vid", "username": "vid"}
    tg.user_sends_in_group(SUPERGROUP, USER, "https://b23.tv/v", via_bot=inline_bot)
    with pytest.raises(ValueError, match="supergroups only"):
        tg.user_sends_in_group(GROUP, USER, "x", anonymous_admin=True)
    reply, anonymous, via = (u.message for u in await bot.get_updates())
    assert reply is not None and reply.reply_to_message is not None
    replied_to = reply.reply_to_message.from_user
    assert replied_to is not None and replied_to.is_bot and replied_to.id == 777
    assert anonymous is not None and anonymous.from_user is not None
    assert (anonymous.from_user.id, anonymous.from_user.is_bot) == (1087968824, True)
    assert anonymous.sender_chat is not None and anonymous.sender_chat.id == SUPERGROUP
    assert via is not None and via.via_bot is not None and via.via_bot.username == "vid"
    assert via.from_user is not None and via.from_user.id == USER


@pytest.mark.asyncio
async def test_privacy_mode_delivers_only_what_is_meant_for_the_bot(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    assert (await bot.get_me()).can_read_all_group_messages is True  # privacy mode off
    tg.privacy_mode = True
    assert (await bot.get_me()).can_read_all_group_messages is False
    mention = {"type": "text_mention", "offset": 0, "length": 3, "user": BOT_USER}
    not_for_it = [
        tg.user_sends_in_group(GROUP, USER, "https://b23.tv/a"),
        tg.user_sends_in_group(GROUP, USER, "/help@other_bot"),
        tg.user_sends_in_group(GROUP, USER, "@other_bot hi"),
    ]
    bot_message = await bot.send_message(GROUP, "I am here")
    for_it = [
        tg.user_sends_in_group(GROUP, USER, "/help"),
        tg.user_sends_in_group(GROUP, USER, "/help@Link2Text_Test_Bot"),
        tg.user_sends_in_group(GROUP, USER, "hey @link2text_test_bot"),
        tg.user_sends_in_group(GROUP, USER, "Bot, hi", entities=[mention]),
        tg.user_sends_in_group(GROUP, USER, "ok", reply_to_message_id=bot_message.message_id),
        tg.group_event(GROUP, "new_chat_members", user_id=MEMBER),
    ]
    updates = await bot.get_updates()
    delivered = [u.message.message_id for u in updates if u.message]
    assert delivered == [m["message_id"] for m in for_it]
    assert not {m["message_id"] for m in not_for_it} & set(delivered)


@pytest.mark.asyncio
async def test_a_member_presses_a_button_in_a_group(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends_in_group(GROUP, USER, "hi")
    tg.group_event(GROUP, "new_chat_members", user_id=MEMBER, first_name="Bo")
    await bot.send_message(GROUP, "Result", reply_markup=keyboard(("Retry", "retry:1")))
    [sent] = tg.messages(GROUP)
    owner = tg.user_presses(USER, sent, "retry:1")
    other = tg.user_presses(MEMBER, sent, "retry:1")
    with pytest.raises(ValueError, match="cannot see"):
        tg.user_presses(99, sent, "retry:1")  # not a member
    queries = [u.callback_query for u in await bot.get_updates() if u.callback_query]
    assert [(q.id, q.from_user.id) for q in queries] == [(owner, USER), (other, MEMBER)]
    assert queries[1].from_user.first_name == "Bo"
    assert queries[0].message is not None and queries[0].message.chat.id == GROUP
    assert queries[0].chat_instance == queries[1].chat_instance  # one per chat


# ------------------------------------------------------------------ the bot's profile, languages


async def raw_call(tg: FakeTelegram, method: str, payload: dict[str, object]) -> dict[str, object]:
    """Call the fake without PTB (for payloads PTB cannot make); the decoded JSON reply."""
    url = f"{tg.api_base_url}{tg.token}/{method}"
    async with aiohttp.ClientSession() as http, http.post(url, json=payload) as response:
        body: dict[str, object] = await response.json()
        assert body.get("error_code", 200) == response.status
        return body


def pairs(commands: tuple[BotCommand, ...]) -> list[tuple[str, str]]:
    return [(c.command, c.description) for c in commands]


@pytest.mark.asyncio
async def test_command_lists_per_scope_and_language(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi", language_code="zh-hans")
    tg.user_sends(MEMBER, "hi", language_code="en")
    tg.user_sends_in_group(GROUP, USER, "hi")
    english = [("start", "Start"), ("help", "Help")]
    chinese = [("start", "开始"), ("help", "帮助")]
    assert await bot.set_my_commands(english)
    assert await bot.set_my_commands(chinese, language_code="zh")
    await bot.set_my_commands([("tasks", "Your tasks")], BotCommandScopeAllPrivateChats(), "en")
    await bot.set_my_commands([("mine", "Only for Ann")], BotCommandScopeChat(USER))
    await bot.set_my_commands([("group", "In groups")], BotCommandScopeAllGroupChats())
    await bot.set_my_commands([("admin", "Admins")], BotCommandScopeAllChatAdministrators())
    await bot.set_my_commands(
        [("gadmin", "This group's admins")], BotCommandScopeChatAdministrators(GROUP)
    )
    await bot.set_my_commands([("ann", "Ann here")], BotCommandScopeChatMember(GROUP, USER), "zh")

    # getMyCommands answers the list of exactly that scope and language, never a fallback
    assert pairs(await bot.get_my_commands()) == english
    assert pairs(await bot.get_my_commands(language_code="zh")) == chinese
    assert await bot.get_my_commands(language_code="fr") == ()
    assert await bot.get_my_commands(BotCommandScopeAllPrivateChats()) == ()
    assert pairs(await bot.get_my_commands(BotCommandScopeAllPrivateChats(), "en")) == [
        ("tasks", "Your tasks")
    ]
    assert pairs(await bot.get_my_commands(BotCommandScopeChat(USER))) == [("mine", "Only for Ann")]
    assert await bot.get_my_commands(BotCommandScopeChat(USER), "zh") == ()
    assert pairs(await bot.get_my_commands(BotCommandScopeChatMember(GROUP, USER), "zh")) == [
        ("ann", "Ann here")
    ]
    assert await bot.get_my_commands(BotCommandScopeChatMember(GROUP, MEMBER), "zh") == ()

    # the same from the test's side
    assert tg.commands == [
        {"command": "start", "description": "Start"},
        {"command": "help", "description": "Help"},
    ]
    assert tg.commands_for("zh") == [{"command": c, "description": d} for c, d in chinese]
    assert tg.commands_for(scope={"type": "chat", "chat_id": USER}) == [
        {"command": "mine", "description": "Only for Ann"}
    ]
    assert tg.commands_for("zh", {"type": "chat_member", "chat_id": str(GROUP), "user_id": USER})
    assert tg.commands_for(scope={"type": "all_group_chats"})[0]["command"] == "group"
    assert tg.commands_for(scope={"type": "all_private_chats"}) == []
    assert len(tg.command_lists()) == 8
    with pytest.raises(ValueError, match="Unsupported type specified"):
        tg.commands_for(scope={"type": "everyone"})

    # what a user sees in the private chat: chat scope, all private chats, default; each first
    # in the user's language ("zh-hans" looks for "zh"), then for every language
    assert tg.menu_seen_by(USER) == [{"command": "mine", "description": "Only for Ann"}]
    assert tg.menu_seen_by(MEMBER) == [{"command": "tasks", "description": "Your tasks"}]
    assert await bot.delete_my_commands(BotCommandScopeChat(USER))
    assert tg.menu_seen_by(USER) == tg.commands_for("zh")
    assert tg.menu_seen_by(USER, language_code="de") == tg.commands
    assert await bot.delete_my_commands()  # only the default list for every language goes
    assert tg.commands == [] and await bot.get_my_commands() == ()
    assert tg.commands_for("zh") != []
    assert tg.menu_seen_by(USER, language_code="de") == []
    await bot.set_my_commands([], language_code="zh")  # an empty list deletes too
    assert tg.commands_for("zh") == []
    tg.commands = [{"command": "x", "description": "Set by the test"}]
    assert pairs(await bot.get_my_commands()) == [("x", "Set by the test")]


@pytest.mark.asyncio
async def test_command_scopes_languages_and_commands_are_checked(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "hi")
    tg.user_sends_in_group(GROUP, USER, "hi")
    await bot.set_my_commands([("start", "Start")])
    # language_code: empty or two lower-case letters (TDLib), in every method
    for language in ("zh-hans", "EN", "eng", "z"):
        with pytest.raises(BadRequest, match="Invalid language code specified"):
            await bot.set_my_commands([("start", "开始")], language_code=language)
    with pytest.raises(BadRequest, match="Invalid language code specified"):
        await bot.get_my_commands(language_code="zh_CN")
    with pytest.raises(BadRequest, match="Invalid language code specified"):
        await bot.delete_my_commands(language_code="english")

    # scopes, with the Bot API server's exact answers
    async def refused(method: str, payload: dict[str, object]) -> object:
        body = await raw_call(tg, method, payload)
        assert body["ok"] is False and body["error_code"] == 400
        return body["description"]

    parse = "Bad Request: can't parse BotCommandScope: "
    assert await refused("deleteMyCommands", {"scope": {"type": "everyone"}}) == (
        parse + "Unsupported type specified"
    )
    assert await refused("getMyCommands", {"scope": {"type": "chat"}}) == (
        parse + 'Can\'t find field "chat_id"'
    )
    assert await refused("getMyCommands", {"scope": {"type": "chat", "chat_id": ""}}) == (
        parse + "Empty chat_id specified"
    )
    assert await refused("getMyCommands", {"scope": {"chat_id": USER}}) == (
        parse + 'Can\'t find field "type"'
    )
    assert await refused(
        "getMyCommands", {"scope": {"type": "chat_member", "chat_id": GROUP, "user_id": 0}}
    ) == (parse + "Invalid user_id specified")
    assert await refused("getMyCommands", {"scope": ["default"]}) == (
        parse + "BotCommandScope must be an Object"
    )
    async with aiohttp.ClientSession() as http:  # a form field that is not JSON
        url = f"{tg.api_base_url}{tg.token}/getMyCommands"
        async with http.post(url, data={"scope": "{default"}) as response:
            assert (await response.json())["description"] == (
                "Bad Request: can't parse BotCommandScope JSON object"
            )
    assert await refused("getMyCommands", {"scope": {"type": "chat", "chat_id": 777}}) == (
        "Bad Request: chat not found"
    )
    assert await refused("getMyCommands", {"scope": {"type": "chat", "chat_id": "@ann"}}) == (
        "Bad Request: chat not found"
    )
    with pytest.raises(BadRequest, match="Can't use specified scope in private chats"):
        await bot.get_my_commands(BotCommandScopeChatAdministrators(USER))
    with pytest.raises(BadRequest, match="Can't use specified scope in private chats"):
        await bot.set_my_commands([("a", "b")], BotCommandScopeChatMember(USER, USER))
    with pytest.raises(BadRequest, match="Can't parse botcommandscope: unsupported type"):
        await bot.set_my_commands([("a", "b")], BotCommandScope("everyone"))

    # commands: trimmed, one leading "/" dropped (TDLib), then Telegram's own checks
    await bot.set_my_commands([(" /tasks ", "  Your tasks \n")], BotCommandScopeChat(GROUP))
    assert tg.commands_for(scope={"type": "chat", "chat_id": GROUP}) == [
        {"command": "tasks", "description": "Your tasks"}
    ]
    with pytest.raises(BadRequest, match="Command must be non-empty"):
        await bot.set_my_commands([(" / ", "Nothing")])
    with pytest.raises(BadRequest, match="Command description must be non-empty"):
        await bot.set_my_commands([("start", "   ")])
    with pytest.raises(BadRequest, match="Command length must not exceed 32"):
        await bot.set_my_commands([("c" * 33, "Long")])
    with pytest.raises(BadRequest, match="Command description length must not exceed 256"):
        await bot.set_my_commands([("start", "描" * 257)])
    await bot.set_my_commands([("c" * 32, "描" * 256)], language_code="zh")  # the limits
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([("Start", "Capital")])
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([("start-now", "Dash")])
    with pytest.raises(BadRequest, match="Bot_commands_too_much"):
        await bot.set_my_commands([(f"c{i}", "x") for i in range(101)])
    assert await refused("setMyCommands", {"commands": [{"command": "start"}]}) == (
        "Bad Request: can't parse BotCommand: Can't find field \"description\""
    )
    assert await refused("setMyCommands", {"commands": ["start"]}) == (
        "Bad Request: can't parse BotCommand: expected an Object"
    )
    assert await refused("setMyCommands", {"commands": {"command": "start"}}) == (
        "Bad Request: expected an Array of BotCommand"
    )
    assert tg.commands == [{"command": "start", "description": "Start"}]  # failures changed nothing


@pytest.mark.asyncio
async def test_descriptions_and_names_per_language(tg: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.get_my_description() == BotDescription("")
    assert await bot.set_my_description("Sends you the text of a video.")
    assert await bot.set_my_description("把视频链接发给我，我回复文字。", language_code="zh")
    assert (await bot.get_my_description()).description == "Sends you the text of a video."
    assert (await bot.get_my_description("zh")).description == "把视频链接发给我，我回复文字。"
    assert (await bot.get_my_description("fr")).description == ""  # no fallback
    assert tg.description_for() == "Sends you the text of a video."
    assert tg.description_for("zh") == "把视频链接发给我，我回复文字。"
    assert tg.description_for("fr") == ""

    assert await bot.set_my_short_description("Video links to text")
    assert await bot.set_my_short_description("视频转文字", language_code="zh")
    assert await bot.get_my_short_description("zh") == BotShortDescription("视频转文字")
    assert (await bot.get_my_short_description()).short_description == "Video links to text"
    assert tg.short_description_for("zh") == "视频转文字"

    # limits (in characters) and languages
    await bot.set_my_description("描" * 512, language_code="ja")
    with pytest.raises(BadRequest, match="Bot_desc_invalid"):
        await bot.set_my_description("x" * 513)
    await bot.set_my_short_description("短" * 120, language_code="ja")
    with pytest.raises(BadRequest, match="Bot_sharetext_invalid"):
        await bot.set_my_short_description("x" * 121)
    with pytest.raises(BadRequest, match="Invalid language code specified"):
        await bot.set_my_description("中文", language_code="zh-hans")
    with pytest.raises(BadRequest, match="Invalid language code specified"):
        await bot.get_my_short_description(language_code="ZH")
    assert tg.description_for() == "Sends you the text of a video."  # failures changed nothing

    # an empty text (or none) removes that language's own text
    assert await bot.set_my_description("", language_code="zh")
    assert tg.description_for("zh") == "" and tg.description_for() != ""
    assert await bot.set_my_short_description()
    assert tg.short_description_for() == "" and tg.short_description_for("zh") == "视频转文字"

    # names: the name for every language is the bot's first_name and cannot be removed
    assert (await bot.get_my_name()).name == "Link2Text Test Bot"
    assert await bot.set_my_name("链接转文字", language_code="zh")
    assert await bot.get_my_name("zh") == BotName("链接转文字")
    assert (await bot.get_my_name("fr")).name == ""
    assert tg.name_for("zh") == "链接转文字" and tg.name_for() == "Link2Text Test Bot"
    with pytest.raises(BadRequest, match="Bot_title_invalid"):
        await bot.set_my_name("")
    with pytest.raises(BadRequest, match="Bot_title_invalid"):
        await bot.set_my_name("n" * 65, language_code="zh")
    assert await bot.set_my_name("Link2Text")
    assert (await bot.get_me()).first_name == "Link2Text"
    assert await bot.set_my_name(language_code="zh")
    assert tg.name_for("zh") == ""
    calls = [name for name, _ in tg.calls]
    assert "setMyName" in calls and "getMyShortDescription" in calls


@pytest.mark.asyncio
async def test_chat_actions_are_checked_and_recorded(tg: FakeTelegram, bot: telegram.Bot) -> None:
    tg.user_sends(USER, "hi")
    tg.user_sends_in_group(GROUP, USER, "hi")
    assert await bot.send_chat_action(USER, ChatAction.TYPING)
    assert await bot.send_chat_action(USER, ChatAction.UPLOAD_DOCUMENT)
    assert await bot.send_chat_action(GROUP, ChatAction.TYPING)
    await bot.send_chat_action(USER, "UPLOAD_PHOTO")  # Telegram lower-cases the action
    await bot.send_chat_action(USER, "record_audio")  # an old name, still taken
    await bot.send_chat_action(USER, "cancel")
    with pytest.raises(BadRequest, match="Wrong parameter action in request"):
        await bot.send_chat_action(USER, "dancing")
    with pytest.raises(BadRequest, match="Wrong parameter action in request"):
        await bot.send_chat_action(777, "dancing")  # the action is read before the chat
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_chat_action(777, ChatAction.TYPING)
    body = await raw_call(tg, "sendChatAction", {"chat_id": USER})
    assert body["description"] == "Bad Request: wrong parameter action in request"
    assert tg.chat_actions(USER) == [
        "typing",
        "upload_document",
        "upload_photo",
        "record_voice",
        "cancel",
    ]
    assert tg.chat_actions(GROUP) == ["typing"]
    assert tg.chat_actions(777) == []

    tg.group_event(GROUP, "left_chat_member", tg.bot_id, user_id=USER)
    with pytest.raises(Forbidden, match="bot was kicked from the group chat"):
        await bot.send_chat_action(GROUP, ChatAction.TYPING)
    tg.user_sends_in_group(SUPERGROUP, USER, "hi")
    await bot.send_chat_action(SUPERGROUP, ChatAction.UPLOAD_DOCUMENT)
    assert tg.chat_actions(SUPERGROUP) == ["upload_document"]
    assert tg.chat_actions(GROUP) == ["typing"]


@pytest.mark.asyncio
async def test_the_users_language_code_follows_the_user(
    tg: FakeTelegram, bot: telegram.Bot
) -> None:
    tg.user_sends(USER, "你好", language_code="zh-hans")
    tg.user_sends(USER, "还是中文")  # no language given: the last one reported stays
    await bot.send_message(USER, "Result", reply_markup=keyboard(("Retry", "retry:1")))
    [sent] = tg.messages(USER)
    tg.user_presses(USER, sent, "retry:1")
    tg.user_sends(USER, "now in English", language_code="en")  # the user switched the app
    tg.user_presses(USER, sent, "retry:1")
    tg.user_sends_in_group(GROUP, USER, "in the group")
    await bot.send_message(GROUP, "Group result", reply_markup=keyboard(("Retry", "retry:2")))
    [in_group] = tg.messages(GROUP)
    tg.user_presses(USER, in_group, "retry:2")
    tg.user_sends(USER, "no language", language_code="")
    tg.user_presses(USER, sent, "retry:1")
    updates = await bot.get_updates()
    senders = [u.effective_user for u in updates]
    assert [s.language_code if s else "?" for s in senders] == [
        "zh-hans",
        "zh-hans",
        "zh-hans",
        "en",
        "en",
        "en",
        "en",
        None,
        None,
    ]
    assert updates[2].callback_query is not None and updates[3].message is not None
    assert tg.language_of(USER) is None
    tg.user_sends(USER, "again", language_code="zh-hans")
    assert tg.language_of(USER) == "zh-hans"
    edited = tg.user_edits(USER, updates[0].message.message_id, "改了")  # type: ignore[union-attr]
    assert edited["from"]["language_code"] == "zh-hans"

"""The composition root: one asyncio process running the web server, the bot and the loops.

The aiohttp application hosts everything: its cleanup contexts open the database, create the
Coze client and the task service, and run PTB (driven by hand, as in PTB's customwebhookbot
example) with the delivery loop. Shutdown runs them backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from telegram import BotCommand, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, ExtBot

from bot import texts
from bot.admin import AdminHandlers
from bot.choices import ChoiceHandlers
from bot.config import Settings
from bot.delivery import DeliveryLoop, DeliveryPolicy
from bot.handlers import Handlers, tell
from bot.history import HistoryHandlers
from bot.i18n import DEFAULT_LANGUAGE, LANGUAGES
from bot.inbound import Inbound
from bot.intake import Intake
from bot.languages import Languages
from bot.polling import Poller
from bot.polling_turn import LOCK_NAME, PollingTurn
from bot.ratelimit import RateLimiter, pauses_of
from bot.telegram_request import AiohttpRequest
from bot.updates import PerChatUpdateProcessor
from coze import CozeWorkflowClient
from storage import DatabaseOpenError, open_database, ping
from storage.claims import Lease
from storage.db import is_postgres
from storage.locks import AdvisoryLock
from tasks import AccessList, Inbox, Quotas, Reconciler, StartPolicy, TaskService
from tasks.claims import Claims
from tasks.preferences import Preferences
from webhook import (
    HEALTH_CHECK,
    METRICS,
    READINESS,
    TASK_SERVICE,
    ServerLimits,
    WebhookRunner,
    WebhookSite,
    create_app,
)
from webhook.app import CALLBACK_PATH
from webhook.telegram import TELEGRAM_PATH, TELEGRAM_RECEIVER, TELEGRAM_SECRET

log = logging.getLogger(__name__)

LOOP_GRACE_SECONDS = 5.0
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]


class StartupError(Exception):
    """The bot cannot start; the message is one line naming the setting to look at."""


@dataclass(frozen=True)
class RunningBot:
    app: web.Application
    public_url: str

    @property
    def service(self) -> TaskService:
        return self.app[TASK_SERVICE]

    def stopping(self) -> None:
        """Shutdown is about to begin: /readyz turns 503 so traffic goes elsewhere."""
        self.app[READINESS].stopping = True


def secrets_of(settings: Settings) -> tuple[str, ...]:
    return (
        settings.telegram.token.get_secret_value(),
        settings.coze.token.get_secret_value(),
        settings.server.callback_secret.get_secret_value(),
        settings.server.previous_callback_secret.get_secret_value(),
        settings.telegram.webhook_secret.get_secret_value(),
    )


def instance_name(settings: Settings) -> str:
    """This instance's name in its claims: as configured, else <host name>:<port>."""
    configured = settings.cluster.instance_id
    return configured or f"{socket.gethostname()}:{settings.server.port}"[:64]


def build_web_app(settings: Settings, public_url: str) -> web.Application:
    app = create_app(max_callback_bytes=settings.server.max_callback_bytes)
    app.cleanup_ctx.append(_database(settings))
    app.cleanup_ctx.append(_task_service(settings, public_url))
    app.cleanup_ctx.append(_telegram(settings, public_url))
    return app


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _database(settings: Settings) -> CleanupContext:
    async def database(app: web.Application) -> AsyncIterator[None]:
        async with open_database(settings.storage.database_url):
            app[HEALTH_CHECK] = ping
            yield

    return database


def _task_service(settings: Settings, public_url: str) -> CleanupContext:
    async def task_service(app: web.Application) -> AsyncIterator[None]:
        claims = Claims(Lease(instance_name(settings), settings.cluster.lease_seconds))
        coze = CozeWorkflowClient(
            base_url=settings.coze.api_base_url,
            token=settings.coze.token.get_secret_value(),
            workflow_id=settings.coze.workflow_id,
            url_parameter=settings.coze.url_parameter,
            callback_url=""
            if settings.coze.completion == "poll"
            else public_url.rstrip("/") + CALLBACK_PATH,
            callback_secret=settings.server.callback_secret.get_secret_value(),
            timeout_seconds=settings.coze.request_timeout_seconds,
        )
        service = TaskService(
            coze,
            callback_secret=settings.server.callback_secret.get_secret_value(),
            previous_callback_secret=settings.server.previous_callback_secret.get_secret_value(),
            max_retries=settings.tasks.max_retries,
            timeout_seconds=settings.tasks.timeout_seconds,
            # Poll mode: run history is the only way to learn an outcome, read from the start.
            reconcile_after_seconds=settings.coze.poll_interval_seconds
            if settings.coze.completion == "poll"
            else settings.tasks.reconcile_after_seconds,
            max_check_interval_seconds=settings.tasks.max_check_interval_seconds,
            start_policy=StartPolicy(
                attempts=settings.coze.start_attempts,
                backoff_seconds=settings.coze.start_backoff_seconds,
            ),
            quotas=Quotas(
                max_active_tasks_per_user=settings.limits.max_active_tasks_per_user,
                max_tasks_per_user_per_day=settings.limits.max_tasks_per_user_per_day,
            ),
            max_concurrent_runs=settings.limits.max_concurrent_runs,
            max_starts_per_second=settings.coze.max_starts_per_second,
            reuse_hours=settings.cache.reuse_hours,
            claims=claims,
        )
        reconciler = Reconciler(
            coze,
            service,
            scan_interval=settings.tasks.scan_interval_seconds,
            rate_per_second=settings.coze.history_checks_per_second,
            max_concurrent=settings.coze.max_concurrent_history_checks,
        )
        app[TASK_SERVICE] = service
        app[METRICS] = service.metrics
        reconciling = asyncio.create_task(reconciler.run(), name="reconciler")
        heartbeat = asyncio.create_task(claims.run(), name="claims-heartbeat")
        try:
            yield
        finally:
            reconciler.stop()
            await _wait_or_cancel(reconciling, LOOP_GRACE_SECONDS)
            await service.close()
            await coze.aclose()
            claims.stop()
            await _wait_or_cancel(heartbeat, LOOP_GRACE_SECONDS)
            # Whatever this instance still held is free for the others at once.
            await claims.release_all()

    return task_service


def build_application(
    settings: Settings,
    service: TaskService,
    inbox: Inbox,
    access: AccessList,
    languages: Languages,
) -> Application:  # type: ignore[type-arg]
    application = (
        ApplicationBuilder()
        .updater(None)  # bot.polling.Poller fetches updates: it stores them first
        .token(settings.telegram.token.get_secret_value())
        .base_url(settings.telegram.api_base_url)
        .rate_limiter(
            RateLimiter(
                overall_max_rate=settings.telegram.max_requests_per_second
                / settings.cluster.instances,
                max_retries=2,
            )
        )
        # aiohttp's client in place of PTB's HTTPXRequest, with what the builder gave it: 256
        # connections for the bot's calls, one for getUpdates (whose read timeout the poller
        # passes with each call).
        .request(
            AiohttpRequest(
                connection_pool_size=256,
                read_timeout=settings.telegram.request_timeout_seconds,
                write_timeout=settings.telegram.request_timeout_seconds,
            )
        )
        .get_updates_request(AiohttpRequest(connection_pool_size=1))
        .concurrent_updates(
            PerChatUpdateProcessor(
                max_concurrent_updates=64,
                on_handled=inbox.handled,
                on_poisoned=inbox.set_aside,
                intake=Intake(
                    access,
                    languages,
                    max_messages_per_minute=settings.limits.max_messages_per_user_per_minute,
                ),
            )
        )
        .build()
    )
    handlers = Handlers(
        service,
        languages,
        max_links_per_message=settings.tasks.max_links_per_message,
        access=access,
        allowed_hosts=settings.limits.allowed_hosts,
    )
    handlers.register(application)
    AdminHandlers(access, languages).register(application)
    ChoiceHandlers(languages).register(application)
    HistoryHandlers(service, languages).register(application)
    handlers.register_fallbacks(application)  # last: unknown commands, links, unknown buttons

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _log_error(update, context, languages)

    application.add_error_handler(on_error)
    return application


async def set_menus(bot: ExtBot[Any]) -> None:
    """The command menu and the description, in each language (Telegram shows a user the
    ones of their app's language, else those set without a language)."""
    for language in (None, *LANGUAGES):
        words = texts.for_language(language or DEFAULT_LANGUAGE)
        commands = [BotCommand(name, description) for name, description in words.commands()]
        try:
            await bot.set_my_commands(commands, language_code=language)
            await bot.set_my_description(words.description, language_code=language)
            await bot.set_my_short_description(words.short_description, language_code=language)
        except TelegramError as exc:
            log.warning("could not set the command menu (%s): %s", language or "default", exc)


async def _log_error(
    update: object, context: ContextTypes.DEFAULT_TYPE, languages: Languages
) -> None:
    where = "polling"
    if isinstance(update, Update):
        user = update.effective_user.id if update.effective_user else None
        chat = update.effective_chat.id if update.effective_chat else None
        where = f"update {update.update_id} (user {user}, chat {chat})"
    # The exception's own message may quote what the user sent: the log at ERROR names its
    # type and where it was raised; the whole traceback is at DEBUG.
    error = context.error
    log.error("error while handling %s: %s at %s", where, type(error).__name__, _origin(error))
    log.debug("error while handling %s", where, exc_info=error)
    if not isinstance(update, Update):
        return
    # The user hears that it failed (never why: that is in the log), rather than silence.
    words = languages.texts_now(update.effective_user).something_went_wrong
    try:
        await tell(update, words)
    except TelegramError as exc:
        log.warning("could not tell the user about the error: %s", exc)


def _origin(error: BaseException | None) -> str:
    """file:line of the innermost frame of the error's traceback."""
    tb = error.__traceback__ if error is not None else None
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


async def _receive_by_webhook(
    app: web.Application,
    settings: Settings,
    application: Application,  # type: ignore[type-arg]
    inbox: Inbox,
    public_url: str,
) -> None:
    """Updates pushed by Telegram to POST /webhook/telegram: stored, then handled like polled
    ones. What the last run left unhandled is handled first. On shutdown the webhook stays:
    Telegram keeps the updates until the bot (or another instance) answers again."""
    inbound = Inbound(application, inbox, app[TASK_SERVICE].metrics)
    secret = settings.telegram.webhook_secret.get_secret_value()
    app[TELEGRAM_SECRET] = secret.encode()
    app[TELEGRAM_RECEIVER] = inbound.receive
    url = settings.telegram.webhook_url or public_url.rstrip("/") + TELEGRAM_PATH
    await application.bot.set_webhook(
        url,
        secret_token=secret,
        allowed_updates=ALLOWED_UPDATES,
        max_connections=settings.telegram.webhook_max_connections,
    )
    log.info("receiving Telegram updates by webhook")


def _telegram(settings: Settings, public_url: str) -> CleanupContext:
    async def telegram(app: web.Application) -> AsyncIterator[None]:
        service = app[TASK_SERVICE]
        inbox = Inbox(service.claims)
        access = AccessList(
            admins=settings.access.admins,
            blocked=settings.access.blocked_users,
            allowed=settings.access.allowed_users,
        )
        await access.load()
        languages = Languages(Preferences(), default=settings.i18n.default_language)
        application = build_application(settings, service, inbox, access, languages)
        async with contextlib.AsyncExitStack() as stack:
            # Another instance's admin may block someone: read the changes every few seconds.
            reloading = asyncio.create_task(access.keep_loaded(), name="access-reload")
            stack.push_async_callback(_wait_or_cancel, reloading, 0.0)
            # Each step registers its own undoing, so a failure half-way through start-up
            # (a rejected token, an unreachable Telegram) still shuts down what was started.
            # The bot's HTTP sessions open before getMe: a rejected token or an unreachable
            # Telegram leaves them open, closed here (after application.shutdown, a no-op).
            stack.push_async_callback(application.bot.shutdown)
            await application.initialize()  # getMe: the token is good, Telegram answers
            stack.push_async_callback(application.shutdown)
            readiness = app[READINESS]
            readiness.telegram = True
            await set_menus(application.bot)
            await application.start()
            stack.push_async_callback(application.stop)
            delivery = DeliveryLoop(
                application.bot,
                service,
                delivery_policy(settings),
                pauses=pauses_of(application.bot),  # the rate limiter's: one registry of pauses
                languages=languages,
                secrets=secrets_of(settings),
            )
            delivery_task = asyncio.create_task(delivery.run(), name="delivery-loop")
            stack.push_async_callback(_stop_delivery, delivery, delivery_task)
            # Before polling starts, so a task created by a new message is not started twice.
            resumed = await service.resume_pending()
            if resumed:
                log.info("resumed %d pending task(s)", resumed)
            # Updates stored but not handled by a stopped instance (this one's last run, or
            # another that died): taken over now, and whenever another instance's claims run out.
            inbound = Inbound(application, inbox, service.metrics)
            await inbound.replay()
            replaying = asyncio.create_task(
                inbound.keep_replaying(settings.cluster.lease_seconds / 3), name="replay"
            )
            stack.push_async_callback(_wait_or_cancel, replaying, 0.0)
            if settings.telegram.mode == "webhook":
                await _receive_by_webhook(app, settings, application, inbox, public_url)
            else:
                await _poll(settings, application, inbox, service, stack)
            # Undone first: from the start of shutdown on, /readyz says this instance is going.
            stack.callback(setattr, readiness, "stopping", True)
            yield

    return telegram


async def _poll(
    settings: Settings,
    application: Application,  # type: ignore[type-arg]
    inbox: Inbox,
    service: TaskService,
    stack: contextlib.AsyncExitStack,
) -> None:
    """Long polling: at once on SQLite (one instance); on PostgreSQL, by the one instance
    that holds the polling lock (bot.polling_turn)."""
    poller = Poller(
        application,
        inbox,
        timeout=settings.telegram.poll_timeout_seconds,
        allowed_updates=ALLOWED_UPDATES,
        read_timeout=settings.telegram.request_timeout_seconds,
        metrics=service.metrics,
    )
    database_url = settings.storage.database_url
    if not is_postgres(database_url):
        await poller.start()
        stack.push_async_callback(poller.stop)
        return
    turn = PollingTurn(
        poller,
        AdvisoryLock(database_url, LOCK_NAME),
        check_seconds=min(5.0, settings.cluster.lease_seconds / 3),
    )
    taking_turns = asyncio.create_task(turn.run(), name="polling-turn")
    stack.push_async_callback(_wait_or_cancel, taking_turns, 0.0)


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    delivery = settings.delivery
    return DeliveryPolicy(
        max_text_messages=delivery.max_text_messages,
        scan_interval=delivery.scan_interval_seconds,
        # Each of several instances sends its share of the bot's budget.
        messages_per_second=delivery.max_messages_per_second / settings.cluster.instances,
        per_chat_interval=delivery.per_chat_interval_seconds,
        per_chat_burst=delivery.per_chat_burst,
        retry_backoff=delivery.retry_backoff_seconds,
        max_attempts=delivery.max_attempts,
        progress_edit_interval=delivery.progress_edit_interval_seconds,
    )


async def _stop_delivery(delivery: DeliveryLoop, task: asyncio.Task[None]) -> None:
    """Let the sends under way finish; past the grace period, stop (the outbox keeps the rest)."""
    delivery.stop()
    await _wait_or_cancel(task, LOOP_GRACE_SECONDS)


async def _wait_or_cancel(task: asyncio.Task[None], grace: float) -> None:
    _, pending = await asyncio.wait({task}, timeout=grace)
    for still_running in pending:
        still_running.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def running_bot(settings: Settings) -> AsyncIterator[RunningBot]:
    """Run the whole bot until the block exits. With port 0 the OS picks the port."""
    try:
        sock = _bind(settings.server.host, settings.server.port)
    except OSError as exc:
        raise StartupError(
            f"server.port: cannot listen on {settings.server.host}:{settings.server.port} "
            f"({exc.strerror or exc})"
        ) from None
    port = sock.getsockname()[1]
    public_url = settings.server.public_url or f"http://{settings.server.host}:{port}"
    app = build_web_app(settings, public_url)
    limits = ServerLimits(
        keepalive_timeout=settings.server.keepalive_timeout_seconds,
        read_timeout=settings.server.read_timeout_seconds,
    )
    runner = WebhookRunner(app, limits)
    try:
        # Opens the database and starts the bot, in this task, so every task created from
        # here on (request handlers, PTB's, the loops) sees the same database context.
        try:
            await runner.setup()
        except InvalidToken:
            raise StartupError(
                "telegram.token: rejected by Telegram (check the token from @BotFather)"
            ) from None
        except DatabaseOpenError as exc:
            raise StartupError(f"storage.database_url: cannot open the database ({exc})") from None
        site = WebhookSite(runner, sock)
        await site.start()
        log.info(
            "listening on %s:%s, callbacks at %s%s",
            settings.server.host,
            port,
            public_url,
            CALLBACK_PATH,
        )
        yield RunningBot(app=app, public_url=public_url)
    finally:
        await runner.cleanup()
        sock.close()

"""Configuration: one TOML file plus environment variables for secrets.

Every key has a default except the secrets and the workflow id. A key the program does not
know, a value of the wrong type, or a missing secret stops start-up with one line naming the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from storage.db import is_postgres, is_sqlite


class ConfigError(Exception):
    """A setting that stops start-up; the message is one line naming the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TelegramSettings(_Section):
    token: SecretStr = SecretStr("")
    api_base_url: str = "https://api.telegram.org/bot"
    mode: Literal["polling", "webhook"] = "polling"
    # Webhook mode: where Telegram sends updates (empty: <server.public_url>/webhook/telegram),
    # the secret token it sends with each (or TELEGRAM_WEBHOOK_SECRET), and how many
    # connections it may open at once.
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    poll_timeout_seconds: int = Field(default=30, ge=0, le=50)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    max_requests_per_second: float = Field(default=30.0, gt=0)


class CozeSettings(_Section):
    api_base_url: str = "https://api.coze.cn"
    token: SecretStr = SecretStr("")
    workflow_id: str = ""
    url_parameter: str = Field(default="url", min_length=1)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    start_attempts: int = Field(default=4, ge=1, le=10)
    start_backoff_seconds: float = Field(default=2.0, ge=0)
    history_checks_per_second: float = Field(default=2.0, gt=0)
    max_concurrent_history_checks: int = Field(default=4, ge=1, le=100)
    max_starts_per_second: float = Field(default=10.0, gt=0)
    # How a run's outcome is learnt: "callback" (the workflow's last node calls
    # /webhook/coze; run history is read only when a callback is late) or "poll" (no callback
    # URL is sent, so no public URL is needed: run history is read from the start, first
    # poll_interval_seconds after the start, each pause twice the last, at most
    # tasks.max_check_interval_seconds).
    completion: Literal["callback", "poll"] = "callback"
    poll_interval_seconds: float = Field(default=5.0, gt=0)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = ""
    callback_secret: SecretStr = SecretStr("")
    # During a rotation of callback_secret: tokens made with the old one are still accepted.
    previous_callback_secret: SecretStr = SecretStr("")
    max_callback_bytes: int = Field(default=1_048_576, ge=1024)
    # An idle keep-alive connection is closed after this; a request whose headers and body
    # have not arrived within read_timeout_seconds is dropped.
    keepalive_timeout_seconds: float = Field(default=15.0, gt=0)
    read_timeout_seconds: float = Field(default=10.0, gt=0)


class StorageSettings(_Section):
    database_url: str = "sqlite://data/bot.sqlite3"


class TaskSettings(_Section):
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=900.0, gt=0)
    reconcile_after_seconds: float = Field(default=120.0, gt=0)
    max_check_interval_seconds: float = Field(default=600.0, gt=0)
    scan_interval_seconds: float = Field(default=5.0, gt=0)
    max_links_per_message: int = Field(default=3, ge=1, le=10)


class DeliverySettings(_Section):
    max_text_messages: int = Field(default=3, ge=1, le=10)
    scan_interval_seconds: float = Field(default=5.0, gt=0)
    max_messages_per_second: float = Field(default=30.0, gt=0)
    per_chat_interval_seconds: float = Field(default=1.0, ge=0)
    per_chat_burst: int = Field(default=3, ge=1, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    max_attempts: int = Field(default=12, ge=1)
    progress_edit_interval_seconds: float = Field(default=5.0, ge=0)


class LimitSettings(_Section):
    """Quotas (0 means no limit) and which links may become tasks."""

    max_active_tasks_per_user: int = Field(default=3, ge=0)
    max_tasks_per_user_per_day: int = Field(default=30, ge=0)
    max_messages_per_user_per_minute: int = Field(default=20, ge=0)
    max_concurrent_runs: int = Field(default=20, ge=0)
    # Registered domains a link's host must be (or be under); empty: any public host.
    allowed_hosts: list[str] = []


class AccessSettings(_Section):
    """Who may use the bot: Telegram user ids. /block and /unblock change it at run time."""

    admins: list[int] = []
    blocked_users: list[int] = []
    # When not empty, only these users (and the admins) may use the bot.
    allowed_users: list[int] = []


class I18nSettings(_Section):
    # The language of users whose Telegram app reports none.
    default_language: Literal["en", "zh"] = "en"


class CacheSettings(_Section):
    # A video extracted successfully within this many hours is answered from the stored
    # text at once, with no Coze run (0 turns this off).
    reuse_hours: float = Field(default=24.0, ge=0)


class ClusterSettings(_Section):
    # Several instances of the bot on one (PostgreSQL) database. This instance's name in its
    # claims on shared work (empty: <host name>:<server.port>): unique among the instances
    # running, and the same across restarts, so that a restarted instance takes its own
    # claims back at once.
    instance_id: str = Field(default="", max_length=64)
    # How long a claim lasts unless renewed: the longest a dead instance's work waits before
    # another instance takes it over.
    lease_seconds: float = Field(default=30.0, ge=3, le=3600)
    # How many instances share Telegram's limits: each sends at most this share of
    # telegram.max_requests_per_second and delivery.max_messages_per_second.
    instances: int = Field(default=1, ge=1, le=100)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text": one readable line per record; "json": one JSON object per line, for collectors.
    format: Literal["text", "json"] = "text"


class Settings(_Section):
    telegram: TelegramSettings = TelegramSettings()
    coze: CozeSettings = CozeSettings()
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    tasks: TaskSettings = TaskSettings()
    delivery: DeliverySettings = DeliverySettings()
    limits: LimitSettings = LimitSettings()
    access: AccessSettings = AccessSettings()
    i18n: I18nSettings = I18nSettings()
    cache: CacheSettings = CacheSettings()
    cluster: ClusterSettings = ClusterSettings()
    logging: LoggingSettings = LoggingSettings()


#: Secrets may come from the environment instead of the file (the environment wins).
SECRET_ENV = {
    "TELEGRAM_BOT_TOKEN": ("telegram", "token"),
    "COZE_API_TOKEN": ("coze", "token"),
    "CALLBACK_SECRET": ("server", "callback_secret"),
    "PREVIOUS_CALLBACK_SECRET": ("server", "previous_callback_secret"),
    "TELEGRAM_WEBHOOK_SECRET": ("telegram", "webhook_secret"),
}
MIN_SECRET_LENGTH = 16


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and complete the settings; raises ConfigError with one line."""
    environ = os.environ if environ is None else environ
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for env_name, (section, key) in SECRET_ENV.items():
        value = environ.get(env_name)
        if value:
            table = raw.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    _check_required(settings)
    return settings


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    given = error.get("input")
    shown = "" if isinstance(given, dict) or _is_secret_key(key) else f" (got {given!r})"
    return f"{key}: {error['msg']}{shown}"


def _is_secret_key(key: str) -> bool:
    return any(key == f"{section}.{name}" for section, name in SECRET_ENV.values())


def _check_required(settings: Settings) -> None:
    secrets = {
        ("telegram", "token"): settings.telegram.token,
        ("coze", "token"): settings.coze.token,
        ("server", "callback_secret"): settings.server.callback_secret,
    }
    env_of = {where: name for name, where in SECRET_ENV.items()}
    for (section, key), value in secrets.items():
        if not value.get_secret_value():
            raise ConfigError(
                f"{section}.{key}: not set (set it in the config file or {env_of[section, key]})"
            )
    for key, secret in (
        ("callback_secret", settings.server.callback_secret),
        ("previous_callback_secret", settings.server.previous_callback_secret),
    ):
        plain = secret.get_secret_value()
        if (plain or key == "callback_secret") and len(plain) < MIN_SECRET_LENGTH:
            raise ConfigError(f"server.{key}: too short (at least {MIN_SECRET_LENGTH} characters)")
    for host in settings.limits.allowed_hosts:
        if not host or "/" in host or ":" in host or host != host.strip().lower().strip("."):
            raise ConfigError(
                f"limits.allowed_hosts: {host!r} is not a domain name like douyin.com"
            )
    if settings.telegram.mode == "webhook":
        token = settings.telegram.webhook_secret.get_secret_value()
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", token):
            raise ConfigError(
                "telegram.webhook_secret: webhook mode needs 16-256 characters of A-Z, a-z, "
                "0-9, _ and - (or TELEGRAM_WEBHOOK_SECRET)"
            )
        if not (settings.telegram.webhook_url or settings.server.public_url):
            raise ConfigError(
                "telegram.webhook_url: webhook mode needs it, or server.public_url, so that "
                "Telegram can reach the bot"
            )
    if not settings.coze.workflow_id:
        raise ConfigError("coze.workflow_id: not set (the id of your published workflow)")
    for key, url in (
        ("telegram.api_base_url", settings.telegram.api_base_url),
        ("telegram.webhook_url", settings.telegram.webhook_url or "http://derived"),
        ("coze.api_base_url", settings.coze.api_base_url),
        ("server.public_url", settings.server.public_url or "http://derived"),
    ):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}: must start with http:// or https:// (got {url!r})")
    db = settings.storage.database_url
    if not (is_sqlite(db) or is_postgres(db)):
        raise ConfigError(f"storage.database_url: unsupported database URL (got {db!r})")
    instance = settings.cluster.instance_id
    if instance and not re.fullmatch(r"[A-Za-z0-9_.:@-]+", instance):
        raise ConfigError(
            f"cluster.instance_id: use letters, digits and _ . : @ - only (got {instance!r})"
        )

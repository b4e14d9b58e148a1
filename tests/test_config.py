"""Configuration: defaults, secrets from the environment, and one clear line for each mistake."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "TELEGRAM_BOT_TOKEN": "123456:ENV-TOKEN",
    "COZE_API_TOKEN": "pat_env_token",
    "CALLBACK_SECRET": "an-env-callback-secret-123",
}
MINIMAL = '[coze]\nworkflow_id = "7400000000000000001"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_committed_config_has_every_default_and_needs_only_secrets(tmp_path: Path) -> None:
    committed = (ROOT / "config.toml").read_text(encoding="utf-8")
    path = write(tmp_path, committed.replace('workflow_id = ""', 'workflow_id = "74001"'))
    settings = load_settings(path, SECRETS)
    assert settings.telegram.api_base_url == "https://api.telegram.org/bot"
    assert settings.telegram.mode == "polling"
    assert settings.coze.api_base_url == "https://api.coze.cn"
    assert settings.coze.url_parameter == "url"
    assert settings.storage.database_url == "sqlite://data/bot.sqlite3"
    assert settings.tasks.max_retries == 2
    assert settings.telegram.token.get_secret_value() == "123456:ENV-TOKEN"
    # Every key is in the file, with the value the code uses when the key is left out.
    in_file = tomllib.loads(committed)
    defaults = Settings()
    for section, model in defaults:
        assert set(in_file[section]) == set(type(model).model_fields), section
        secrets = {"token", "callback_secret", "workflow_id"}
        assert getattr(settings, section).model_dump(exclude=secrets) == model.model_dump(
            exclude=secrets
        ), section


def test_secrets_from_the_environment_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[telegram]\ntoken = "1:FILE"\n')
    assert load_settings(path, SECRETS).telegram.token.get_secret_value() == "123456:ENV-TOKEN"
    only_file = {k: v for k, v in SECRETS.items() if k != "TELEGRAM_BOT_TOKEN"}
    assert load_settings(path, only_file).telegram.token.get_secret_value() == "1:FILE"


def test_secrets_are_masked_in_the_settings_repr(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), SECRETS)
    shown = repr(settings) + str(settings)
    assert all(secret not in shown for secret in SECRETS.values())


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        (MINIMAL, {}, "telegram.token: not set (set it in the config file or TELEGRAM_BOT_TOKEN)"),
        (
            MINIMAL,
            {k: v for k, v in SECRETS.items() if k != "COZE_API_TOKEN"},
            "coze.token: not set (set it in the config file or COZE_API_TOKEN)",
        ),
        (
            MINIMAL,
            {**SECRETS, "CALLBACK_SECRET": "short"},
            "server.callback_secret: too short (at least 16 characters)",
        ),
        ("", SECRETS, "coze.workflow_id: not set (the id of your published workflow)"),
        (MINIMAL + "[tasks]\nmax_retries = 'two'\n", SECRETS, "tasks.max_retries: "),
        (MINIMAL + "[tasks]\nmax_retries = -1\n", SECRETS, "tasks.max_retries: "),
        (MINIMAL + "[tasks]\nmax_retry = 3\n", SECRETS, "tasks.max_retry: unknown key"),
        (MINIMAL + "[colour]\nblue = 1\n", SECRETS, "colour: unknown key"),
        (MINIMAL + "[telegram]\nmode = 'carrier-pigeon'\n", SECRETS, "telegram.mode: "),
        (MINIMAL + "[server]\nport = 70000\n", SECRETS, "server.port: "),
        (
            MINIMAL + "api_base_url = 'api.coze.cn'\n",
            SECRETS,
            "coze.api_base_url: must start with http:// or https://",
        ),
        (
            MINIMAL + "[storage]\ndatabase_url = 'mysql://x'\n",
            SECRETS,
            "storage.database_url: unsupported database URL",
        ),
        ("[coze\n", SECRETS, "is not valid TOML"),
        (
            MINIMAL + "[telegram]\nmode = 'webhook'\n",
            {**SECRETS, "TELEGRAM_WEBHOOK_SECRET": "has spaces in it, not allowed"},
            "telegram.webhook_secret: webhook mode needs 16-256 characters",
        ),
        (
            MINIMAL + "[telegram]\nmode = 'webhook'\n",
            {**SECRETS, "TELEGRAM_WEBHOOK_SECRET": "a-good-webhook-secret-42"},
            "telegram.webhook_url: webhook mode needs it, or server.public_url",
        ),
        (MINIMAL + "completion = 'pigeon'\n", SECRETS, "coze.completion: "),
        (MINIMAL + "poll_interval_seconds = 0\n", SECRETS, "coze.poll_interval_seconds: "),
        (
            MINIMAL + "[cluster]\ninstance_id = 'bot 1; drop'\n",
            SECRETS,
            "cluster.instance_id: use letters, digits and _ . : @ - only",
        ),
        (MINIMAL + "[cluster]\nlease_seconds = 1\n", SECRETS, "cluster.lease_seconds: "),
        (MINIMAL + "[cluster]\ninstances = 0\n", SECRETS, "cluster.instances: "),
    ],
    ids=[
        "no-telegram-token",
        "no-coze-token",
        "short-secret",
        "no-workflow",
        "wrong-type",
        "out-of-range",
        "unknown-key",
        "unknown-section",
        "bad-mode",
        "bad-port",
        "bad-url",
        "bad-database",
        "bad-toml",
        "webhook-secret",
        "webhook-url",
        "bad-completion",
        "no-poll-interval",
        "bad-instance-id",
        "short-lease",
        "no-instances",
    ],
)
def test_each_mistake_stops_start_up_with_one_line_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[telegram]\ntoken = 123456789\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {k: v for k, v in SECRETS.items() if k != "TELEGRAM_BOT_TOKEN"})
    assert str(caught.value).startswith("telegram.token: ")
    assert "123456789" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml", SECRETS)


def test_the_program_prints_one_line_and_exits_2_before_connecting(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[tasks]\nmax_retries = 'two'\n")
    environ = {"PATH": "/usr/bin:/bin", **SECRETS}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(path)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: tasks.max_retries: ")
    assert not (tmp_path / "data").exists()

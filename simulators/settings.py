"""The bot's settings for running against the simulators (tests, demo, benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

from simulators.coze import FakeCoze
from simulators.telegram import FakeTelegram

TomlValue = str | int | float | bool
Sections = dict[str, dict[str, TomlValue]]


def bot_settings(
    telegram: FakeTelegram,
    coze: FakeCoze,
    workdir: Path,
    *,
    callback_secret: str,
    database_name: str = "bot.sqlite3",
    log_level: str = "INFO",
) -> Sections:
    """Config sections pointing the bot at these simulators; the database lives in `workdir`.

    The web server binds a port the OS chooses and derives its public URL from it.
    """
    return {
        "telegram": {
            "token": telegram.token,
            "api_base_url": telegram.api_base_url,
            "poll_timeout_seconds": 5,
        },
        "coze": {
            "api_base_url": coze.base_url,
            "token": coze.token,
            "workflow_id": coze.workflow_id,
            "request_timeout_seconds": 5.0,
            # The fake Coze has no QPS plan to protect.
            "max_starts_per_second": 100.0,
        },
        "server": {"host": "127.0.0.1", "port": 0, "callback_secret": callback_secret},
        "storage": {"database_url": f"sqlite://{workdir}/{database_name}"},
        "delivery": {"scan_interval_seconds": 0.5},
        # The simulators measure the flow, not the quotas: no limits (tests of the limits,
        # and the bench's flood, set their own).
        "limits": {
            "max_active_tasks_per_user": 0,
            "max_tasks_per_user_per_day": 0,
            "max_messages_per_user_per_minute": 0,
            "max_concurrent_runs": 0,
        },
        "logging": {"level": log_level},
    }


def to_toml(sections: Sections) -> str:
    out: list[str] = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                shown = "true" if value else "false"
            elif isinstance(value, str):
                shown = json.dumps(value)  # a JSON string is a valid TOML basic string
            else:
                shown = repr(value)
            out.append(f"{key} = {shown}")
        out.append("")
    return "\n".join(out)

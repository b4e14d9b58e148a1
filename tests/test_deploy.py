"""The deployment files cannot run here (no Docker, no systemd): check what can be checked,
that they start the bot the way the README says, on the port the bot listens on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))["server"]["port"]


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_the_image_runs_the_bot_as_a_user_on_its_port_with_a_health_check() -> None:
    dockerfile = read("Dockerfile")
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert re.search(r"^USER (?!root)\w+$", dockerfile, re.M)
    assert re.search(rf"^EXPOSE {PORT}$", dockerfile, re.M)
    assert f"http://127.0.0.1:{PORT}/healthz" in dockerfile
    assert 'CMD ["python", "-m", "bot", "--config", "/app/config.toml"]' in dockerfile
    assert 'pip install ".[postgres]"' in dockerfile  # asyncpg, for PostgreSQL


def test_compose_migrates_once_then_starts_the_instances_on_postgresql() -> None:
    compose = read("deploy/docker-compose.yml")
    assert compose.count('command: ["python", "-m", "bot", "--config", "/app/config.toml"]') == 2
    assert 'command: ["python", "-m", "bot", "migrate", "--config", "/app/config.toml"]' in compose
    assert compose.count(f':{PORT}"') == 2  # each instance's container port
    assert "condition: service_completed_successfully" in compose
    assert "image: postgres:" in compose
    for secret in ("TELEGRAM_BOT_TOKEN", "COZE_API_TOKEN", "CALLBACK_SECRET"):
        assert secret in compose and f"{secret}=" not in compose  # named, never written


def test_the_systemd_unit_migrates_then_runs_the_bot() -> None:
    unit = read("deploy/link2text.service")
    assert re.search(r"^ExecStartPre=\S+python -m bot migrate --config \S+$", unit, re.M)
    assert re.search(r"^ExecStart=\S+python -m bot --config \S+$", unit, re.M)
    assert "KillSignal=SIGTERM" in unit and "EnvironmentFile=" in unit


def test_the_readme_names_the_same_commands() -> None:
    readme = read("README.md")
    assert "python -m bot migrate --config" in readme
    assert "deploy/docker-compose.yml" in readme and "deploy/link2text.service" in readme
    assert "docker build" in readme

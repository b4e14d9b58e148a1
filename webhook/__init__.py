"""The aiohttp server: Coze completion callbacks, health and readiness."""

from webhook.app import CALLBACK_PATH, METRICS, TASK_SERVICE, create_app
from webhook.connections import ServerLimits
from webhook.health import HEALTH_CHECK, READINESS, Readiness
from webhook.server import WebhookRunner, WebhookSite

__all__ = [
    "CALLBACK_PATH",
    "HEALTH_CHECK",
    "METRICS",
    "READINESS",
    "TASK_SERVICE",
    "Readiness",
    "ServerLimits",
    "WebhookRunner",
    "WebhookSite",
    "create_app",
]

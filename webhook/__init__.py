"""The aiohttp server: Coze completion callbacks and health."""

from webhook.app import CALLBACK_PATH, HEALTH_CHECK, TASK_SERVICE, create_app
from webhook.connections import ServerLimits
from webhook.server import WebhookRunner, WebhookSite

__all__ = [
    "CALLBACK_PATH",
    "HEALTH_CHECK",
    "TASK_SERVICE",
    "ServerLimits",
    "WebhookRunner",
    "WebhookSite",
    "create_app",
]

"""The aiohttp server: Coze completion callbacks and health."""

from webhook.app import HEALTH_CHECK, TASK_SERVICE, create_app

__all__ = ["HEALTH_CHECK", "TASK_SERVICE", "create_app"]

"""What the bot is doing, for Prometheus: GET /metrics in its text format.

Counters and histograms live in this object's own registry (no process-wide state): it is made
once at start and passed to whoever counts. Figures that are rows in the database (tasks by
state, the outbox backlog) are read when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from storage import repository

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: from a fraction of a second (an acknowledgement) to the default deadline (15 min).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._tasks = Gauge("link2text_tasks", "Tasks by state", ["state"], registry=r)
        self._backlog = Gauge(
            "link2text_outbox_backlog", "Outcomes stored and not yet sent", registry=r
        )
        self._callbacks = Counter(
            "link2text_callbacks", "Workflow callbacks by HTTP answer", ["status"], registry=r
        )
        self._updates = Counter(
            "link2text_telegram_updates", "Telegram updates received", ["source"], registry=r
        )
        self._deliveries = Counter(
            "link2text_deliveries", "Outcome deliveries by result", ["result"], registry=r
        )
        self._coze = Counter(
            "link2text_coze_calls", "Coze API calls by kind and result", ["call", "result"],
            registry=r,
        )  # fmt: skip
        self._ack = Histogram(
            "link2text_paste_to_ack_seconds",
            "From the user's message to the bot's acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._run = Histogram(
            "link2text_start_to_outcome_seconds",
            "From the start of a Coze run to its outcome",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._claims = Gauge(
            "link2text_claims", "Claims this instance holds on shared work", ["kind"], registry=r
        )
        self._claims_held: Callable[[], dict[str, int]] | None = None
        self._delivery = Histogram(
            "link2text_outcome_to_delivered_seconds",
            "From an outcome stored to its delivery",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # --- counting ----------------------------------------------------------------------------

    def callback(self, status: int) -> None:
        self._callbacks.labels(str(status)).inc()

    def update_received(self, source: str) -> None:
        self._updates.labels(source).inc()

    def delivery(self, result: str) -> None:
        self._deliveries.labels(result).inc()

    def coze_call(self, call: str, result: str) -> None:
        self._coze.labels(call, result).inc()

    def acknowledged(self, seconds: float) -> None:
        self._ack.observe(max(0.0, seconds))

    def run_finished(self, seconds: float) -> None:
        self._run.observe(max(0.0, seconds))

    def delivered(self, seconds: float) -> None:
        self._delivery.observe(max(0.0, seconds))

    def count_claims(self, held: Callable[[], dict[str, int]]) -> None:
        """Read the instance's claims (by kind) from `held` at each scrape."""
        self._claims_held = held

    # --- exposition --------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The text format, with the database's figures read now."""
        for state, count in (await repository.task_counts_by_state()).items():
            self._tasks.labels(state).set(count)
        self._backlog.set(await repository.outbox_backlog())
        if self._claims_held is not None:
            for kind, count in self._claims_held().items():
                self._claims.labels(kind).set(count)
        return generate_latest(self.registry)

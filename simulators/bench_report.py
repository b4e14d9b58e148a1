"""`make bench`'s table: each figure of one run beside the target it is held to.

The figures come as {scenario: {name: number}} (also written as JSON); this module only picks
them out, formats them and says whether each target is met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Results = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target

    def cells(self) -> list[str]:
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        return [self.figure, self.value, self.target, verdict]


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _latency(figures: dict[str, float], prefix: str) -> str:
    return f"p50 {_ms(figures[f'{prefix}_p50_ms'])}, p99 {_ms(figures[f'{prefix}_p99_ms'])}"


def rows(results: Results) -> list[Row]:
    out: list[Row] = []
    sizes = sorted(
        int(name.removeprefix("callbacks_")) for name in results if name.startswith("callbacks_")
    )
    for connections in sizes:
        c = results[f"callbacks_{connections}"]
        at64 = connections == 64
        for kind, goal in (("first", 2000.0), ("duplicate", 5000.0)):
            rate, p99 = c[f"{kind}_per_s"], c[f"{kind}_p99_ms"]
            out.append(
                Row(
                    f"callbacks/s, {kind} outcomes, {connections} connections",
                    f"{_rate(rate)} (p99 {_ms(p99)}; no database: {_rate(c['ceiling_per_s'])})",
                    f">= {goal:,.0f}/s at p99 < 100 ms" if at64 else "",
                    (rate >= goal and p99 < 100) if at64 else None,
                )
            )
        if connections == sizes[-1]:  # the most connections: the targets are at 64
            out.append(
                Row(
                    "CPU per callback: duplicate / first (its text sent)",
                    f"{c['cpu_ms_duplicate']:.2f} ms / {c['cpu_ms_first']:.2f} ms",
                    "<= 0.5 ms",
                    c["cpu_ms_duplicate"] <= 0.5 and c["cpu_ms_first"] <= 0.5,
                )
            )
            out.append(
                Row(
                    "SQL statements per callback: duplicate / first (its text sent)",
                    f"{c['statements_duplicate']:.1f} / {c['statements_first']:.1f}",
                )
            )
    if "steady" in results:
        s = results["steady"]
        out.append(
            Row(
                "paste -> acknowledgement, new users at a steady rate",
                _latency(s, "ack"),
                "p99 <= 50 ms",
                s["ack_p99_ms"] <= 50,
            )
        )
    if "drain" in results:
        d = results["drain"]
        out.append(
            Row(
                f"paste -> acknowledgement while {d['backlog']:,.0f} texts drain",
                _latency(d, "ack"),
                "p99 < 1 s",
                d["ack_p99_ms"] < 1000,
            )
        )
        out.append(
            Row(
                "Telegram budget used while the backlog drains",
                f"{d['budget_used']:.1%} ({d['calls_per_s']:.1f} calls/s of 30)",
                ">= 95%",
                d["budget_used"] >= 0.95,
            )
        )
        refused = d["telegram_429"] + results.get("steady", {}).get("telegram_429", 0)
        out.append(
            Row("429s from a Bot API enforcing 30 calls/s", f"{refused:.0f}", "0", refused == 0)
        )
    for mode in ("callback", "poll"):
        if mode not in results:
            continue
        m = results[mode]
        is_callback = mode == "callback"
        out.append(
            Row(
                f"run completed -> text sent, {mode} mode",
                _latency(m, "completion_to_text"),
                "p50 < 100 ms" if is_callback else "",
                m["completion_to_text_p50_ms"] < 100 if is_callback else None,
            )
        )
    if "callback" in results and "poll" in results:
        cb, poll = results["callback"], results["poll"]
        out.append(
            Row(
                "Coze calls per task, callback / poll mode",
                f"{cb['coze_calls_per_task']:.2f} / {poll['coze_calls_per_task']:.2f}",
                "1.0 in callback mode",
                cb["coze_calls_per_task"] <= 1.0,
            )
        )
        out.append(
            Row(
                "SQL statements (of them reads) per task, callback / poll mode",
                f"{cb['statements_per_task']:.1f} ({cb['reads_per_task']:.1f}) / "
                f"{poll['statements_per_task']:.1f} ({poll['reads_per_task']:.1f})",
            )
        )
    if "many" in results:
        n = results["many"]
        tasks = f"{n['tasks']:,.0f} tasks"
        out.append(
            Row(
                f"CPU per task ({tasks}: paste, start, callback, text)",
                f"{n['cpu_ms_per_task']:.1f} ms",
                "<= 5 ms",
                n["cpu_ms_per_task"] <= 5,
            )
        )
        out.append(
            Row(
                f"peak RSS of the bot process ({tasks})",
                f"{n['peak_rss_mb']:.0f} MB",
                "< 150 MB",
                n["peak_rss_mb"] < 150,
            )
        )
        out.append(
            Row(f"database bytes per task ({tasks})", f"{n['database_bytes_per_task']:,.0f}")
        )
        out.append(Row(f"SQL statements per task ({tasks})", f"{n['statements_per_task']:.1f}"))
        out.append(Row(f"tasks/s ({tasks}, limits lifted)", f"{n['tasks_per_s']:.0f}/s"))
    if "flood" in results:
        f = results["flood"]
        out.append(
            Row(
                "paste -> acknowledgement of others while one user floods",
                _latency(f, "others_ack"),
            )
        )
    return out


def markdown(table: list[Row]) -> str:
    lines = ["| Figure | This run | Target | |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in table]
    return "\n".join(lines)

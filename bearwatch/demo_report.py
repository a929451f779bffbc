"""What `bearwatch demo` prints when the stream is done: a summary a person can read."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from monitor.alerting.message import describe
from monitor.alerting.outbox import MemoryOutbox
from monitor.app import RunStats
from monitor.detection.stage import DetectionStage
from monitor.detection.tracker import NewsTracker, TrackerConfig
from monitor.records import Alert
from monitor.schema import format_time
from monitor.sources.memory import MemoryTopic

_NOT_KEPT = frozenset({"embedding", "timings_ms"})


class DemoReport:
    """Collects the scored batches and runs the production detection stage in-process on the scored
    records the embedded publisher wrote (`scored`, its tap), as the detector reads the scored topic."""

    def __init__(self, scored: MemoryTopic, tracker_config: TrackerConfig | None = None) -> None:
        self.documents: list[dict] = []
        self.dead_letters: list[tuple[str, str]] = []  # (where, reason)
        self.outbox = MemoryOutbox()
        self.detection = DetectionStage(scored, NewsTracker(tracker_config), self.outbox)
        self.alerts: list[dict] = []

    def add(self, messages, result) -> None:
        # what the summary and the HTML report read: not the vector (384 floats a document) nor timings
        self.documents.extend({k: v for k, v in d.items() if k not in _NOT_KEPT} for d in result.documents)
        self.detection.drain()
        for record in result.dead:
            headers = dict(record.headers)
            self.dead_letters.append(
                (
                    f"line {int(headers['bearwatch.source.offset']) + 1}",
                    headers["bearwatch.error"].decode("utf-8", "replace"),
                )
            )

    def finish(self, out: Path) -> list[Alert]:
        """The file has ended: the detection stage closes its last buckets; the alerts, also written
        as JSON lines (the alerts index's documents)."""
        import json

        self.detection.drain()  # the caught-up mark published after the last batch
        self.detection.finish()
        alerts = sorted(self.outbox.docs.values(), key=lambda a: (a.window_start, a.key))
        self.alerts = [a.to_json() for a in alerts]
        with (out / "alerts.jsonl").open("w", encoding="utf-8") as fh:
            for doc in self.alerts:
                fh.write(json.dumps(doc) + "\n")
        return alerts

    def render(self, stats: RunStats, out: Path, wall_s: float) -> str:
        """`wall_s`: how long the run took, from the first poll to the end of the file (the model's
        loading excluded); its rate is the throughput, the stages' own times say where it went."""
        alerts = self.finish(out)
        docs = [d for d in self.documents if not d["duplicate"]]
        lines = [
            "",
            f"{stats.consumed} messages: {stats.scored} scored ({stats.duplicates} marked duplicate), "
            f"{stats.dead_letters} sent to the dead-letter output",
            f"throughput {stats.consumed / max(wall_s, 1e-9):.0f} items/s on this machine ({wall_s:.1f} s, the "
            f"model's loading excluded); time per stage: "
            + ", ".join(
                f"{k} {1000 * v / max(1, stats.consumed):.2f} ms/item" for k, v in stats.seconds.items() if k != "total"
            ),
        ]
        if self.dead_letters:
            lines += ["", "dead letters (original bytes kept, with the reason):"]
            lines += [f"  {where:<9} {reason}" for where, reason in self.dead_letters]
        lines += ["", "sentiment by ticker (distinct items):", f"  {'ticker':<8}{'items':>6}{'bearish':>9}{'share':>8}"]
        by_ticker: dict[str, Counter] = defaultdict(Counter)
        for d in docs:
            for t in d.get("tickers") or ["(none)"]:
                by_ticker[t][d["sentiment"]] += 1
        rows = sorted(by_ticker.items(), key=lambda kv: -kv[1]["bearish"] / max(1, sum(kv[1].values())))
        for ticker, c in rows:
            n = sum(c.values())
            lines.append(f"  {ticker:<8}{n:>6}{c['bearish']:>9}{c['bearish'] / n:>8.0%}")
        negative = sorted((d for d in docs if d["negative"]), key=lambda d: -d["p_bearish"])[:8]
        if negative:
            lines += ["", "most negative headlines:"]
            lines += [f"  {d['p_bearish']:.2f}  {d['published_at'][:16]}  {d['headline']}" for d in negative]
        by_id = {d["id"]: d for d in self.documents}
        lines += ["", f"alerts ({len(alerts)} episode(s); a Slack message each when Slack is configured):"]
        for a in alerts:
            lines.append(
                f"  [{a.severity.upper()}] {a.key}: {a.kind.replace('_', ' ')} from {format_time(a.window_start)[:16]} "
                f"to {format_time(a.window_end)[:16]} ({a.status}): {describe(a)}"
            )
            for item_id in a.headline_ids[:3]:
                if item_id in by_id:
                    lines.append(f"      {by_id[item_id]['headline']}")
        topics = Counter(d["topic"] for d in docs).most_common(6)
        lines += ["", "topics: " + ", ".join(f"{t} {n}" for t, n in topics)]
        lines += [
            "",
            f"outputs in {out}/: bearwatch.news.scored.jsonl, bearwatch.news.dlq.jsonl, alerts.jsonl, history/ (the "
            "retrieval index)",
        ]
        return "\n".join(lines)

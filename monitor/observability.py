"""Prometheus metrics and a health endpoint for the daemons.

Each daemon gets its own metrics registry (no global state), served with ``/healthz`` on one port:
the scoring monitor's, the detector's and the trainer's, each with the process collectors
(``process_*``: CPU, memory, open files; ``python_*``: GC, version). Names follow Prometheus's
conventions: a ``bearwatch_`` prefix, the unit as a suffix (``_seconds``, ``_messages``), counters
exposed with ``_total``, times as ``_timestamp_seconds`` (alert on ``time() - …``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST


def daemon_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ScoringMetrics:
    def __init__(self) -> None:
        self.registry = daemon_registry()
        r = self.registry
        self.consumed = Counter("bearwatch_consumed", "Messages consumed", registry=r)
        self.scored = Counter("bearwatch_scored", "Items scored and written", registry=r)
        self.dead_letters = Counter(
            "bearwatch_dead_letters",
            "Messages sent to the dead-letter topic, by the stage that refused them",
            ["stage"],
            registry=r,
        )
        self.duplicates = Counter(
            "bearwatch_duplicates", "Duplicate items (same id or near-identical text)", registry=r
        )
        self.redelivered = Counter("bearwatch_redelivered", "Items seen again after a replay", registry=r)
        self.write_failures = Counter(
            "bearwatch_write_failures", "Batches whose writes failed (retried, not committed)", registry=r
        )
        self.commits = Counter("bearwatch_commits", "Offset commits", registry=r)
        self.stage_seconds = Histogram(
            "bearwatch_stage_seconds",
            "Seconds per batch and stage",
            ["stage"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "bearwatch_consumer_lag_messages",
            "Messages behind the end of each assigned partition of the news topic",
            ["topic", "partition"],
            registry=r,
        )
        self.model_info = Gauge(
            "bearwatch_model_info", "The model version in use (value 1)", ["version", "provider"], registry=r
        )


class DetectionMetrics:
    """The detector: what it read, what it raised, and where Slack delivery stands (an outage shows
    as `bearwatch_slack_attempts_total{outcome="retry"}` rising and the pending gauge growing)."""

    def __init__(self) -> None:
        self.registry = daemon_registry()
        r = self.registry
        self.records = Counter("bearwatch_detector_records", "Scored records read from the scored topic", registry=r)
        self.skipped = Counter(
            "bearwatch_detector_skipped_records", "Scored records that could not be read (a bug)", registry=r
        )
        self.late = Counter(
            "bearwatch_detector_late_items", "Items older than their partition's watermark, left out", registry=r
        )
        self.alert_events = Counter(
            "bearwatch_alert_events", "Alert events written to the outbox", ["kind", "severity", "status"], registry=r
        )
        self.slack_attempts = Counter(
            "bearwatch_slack_attempts",
            "Slack deliveries by outcome: sent, retry (to try again later), failed (refused for good), followup",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge("bearwatch_alerts_pending", "Alerts whose Slack message is not sent yet", registry=r)
        self.last_sent = Gauge(
            "bearwatch_slack_last_success_timestamp_seconds", "When Slack last took a message", registry=r
        )
        self.store_errors = Counter(
            "bearwatch_detector_store_errors", "Outbox or snapshot writes that failed (retried)", registry=r
        )
        self.last_snapshot = Gauge(
            "bearwatch_detector_last_snapshot_timestamp_seconds", "When the detector's state was last saved", registry=r
        )
        self.watermark = Gauge(
            "bearwatch_detector_watermark_timestamp_seconds", "The detector's event-time watermark", registry=r
        )
        self.lag = Gauge(
            "bearwatch_detector_lag_messages", "Scored records behind the end of the scored topic", registry=r
        )


class TrainerMetrics:
    """The trainer: cycles by outcome and when the last of each ran (alert on a stale promotion)."""

    def __init__(self) -> None:
        self.registry = daemon_registry()
        r = self.registry
        self.cycles = Counter(
            "bearwatch_trainer_cycles", "Retraining cycles by outcome (promoted, rejected, skipped, failed)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.last_cycle = Gauge(
            "bearwatch_trainer_last_cycle_timestamp_seconds", "When a cycle last ended, by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.cycle_seconds = Gauge(
            "bearwatch_trainer_last_cycle_duration_seconds", "How long the last cycle took", registry=r
        )
        self.inbox_labels = Counter(
            "bearwatch_trainer_inbox_labels", "Labels imported from the labels inbox", registry=r
        )
        self.model_info = Gauge(
            "bearwatch_trainer_current_model_info", "The registry's current version (value 1)", ["version"], registry=r
        )

    def cycle(self, outcome: str, seconds: float, current: str | None) -> None:
        self.cycles.labels(outcome=outcome).inc()
        self.last_cycle.labels(outcome=outcome).set_to_current_time()
        self.cycle_seconds.set(seconds)
        if current:
            self.model_info.clear()
            self.model_info.labels(version=current).set(1)


class Health:
    """What /healthz reports: alive while the loop turns, unhealthy while writes keep failing."""

    def __init__(self, stale_after_s: float = 120.0) -> None:
        self.stale_after_s = stale_after_s
        self.last_loop = time.monotonic()
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.model_version: str | None = None
        self._lock = threading.Lock()

    def loop_turned(self) -> None:
        with self._lock:
            self.last_loop = time.monotonic()

    def write_failed(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self.failing_since = self.failing_since or time.monotonic()

    def write_succeeded(self) -> None:
        with self._lock:
            self.failing_since = None

    def report(self) -> tuple[bool, dict]:
        with self._lock:
            now = time.monotonic()
            stale = now - self.last_loop > self.stale_after_s
            failing = self.failing_since is not None and now - self.failing_since > self.stale_after_s
            return not (stale or failing), {
                "status": "ok" if not (stale or failing) else "unhealthy",
                "seconds_since_last_loop": round(now - self.last_loop, 1),
                "failing_writes_for_s": round(now - self.failing_since, 1) if self.failing_since else 0,
                "last_error": self.last_error,
                "model_version": self.model_version,
            }


Route = Callable[[Mapping[str, str], bytes], tuple[int, str]]  # (headers, body) -> (status, text)
MAX_POST_BYTES = 1 << 20  # Slack's interaction payloads are a few kB


def serve(
    host: str, port: int, registry: CollectorRegistry, health: Health, posts: Mapping[str, Route] | None = None
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread, and `posts` (path -> handler: the detector's
    Slack answers); returns the server (port 0: any free port)."""
    routes = dict(posts or {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            route = routes.get(self.path.split("?", 1)[0])
            length = self.headers.get("Content-Length") or "0"
            if route is None:
                status, text = 404, "not found\n"
            elif not length.isdigit():
                status, text = 400, "a Content-Length is needed\n"
            elif int(length) > MAX_POST_BYTES:
                status, text = 413, "too large\n"
            else:
                status, text = route(dict(self.headers.items()), self.rfile.read(int(length)))
            self._reply(status, "text/plain; charset=utf-8", text.encode())

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, state = health.report()
                body, status, ctype = json.dumps(state).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self._reply(status, ctype, body)

        def _reply(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scraping every few seconds is not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="bearwatch-metrics", daemon=True).start()
    return server

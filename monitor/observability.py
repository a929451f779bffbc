"""Prometheus metrics and a health endpoint for the daemons.

Each app gets its own metrics registry (no global state), served with ``/healthz`` on one port.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class ScoringMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.lag = Gauge("bearwatch_consumer_lag", "Messages behind the end of the assigned partitions", registry=r)
        self.model_info = Gauge(
            "bearwatch_model_info", "The model version in use (value 1)", ["version", "provider"], registry=r
        )


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


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a daemon thread; returns the server (port 0: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, state = health.report()
                body, status, ctype = json.dumps(state).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
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

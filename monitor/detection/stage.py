"""The detection stage: scored items in, alerts written to the outbox, then delivered.

One instance reads every partition of the scored topic (the tracker's keys span partitions). Its
state survives restarts as a snapshot of the tracker *with the offsets it reflects*, stored
together in one document: after a crash it resumes from the snapshot's offsets, replays what came
after, and the tracker ignores ids it already counted. Alerts are written before offsets move on;
an ``opened`` alert already in the outbox is not written twice, and delivery only posts pending ones.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from monitor.alerting.outbox import Delivered, Outbox
from monitor.detection.tracker import NewsTracker, TrackerConfig
from monitor.errors import StoreUnavailable
from monitor.observability import DetectionMetrics
from monitor.progress import Progress
from monitor.records import AlertEvent, ScoredEvent, Watermark
from monitor.sources.base import TopicReader, caught_up

log = logging.getLogger("bearwatch.detect")
DELIVERY_GRACE_S = 120.0  # an idle exit waits this long at most for Slack to take the pending alerts


class Snapshots(Protocol):
    """Where the stage keeps its snapshot (tracker state + the offsets it reflects): one document.
    Production: monitor.elastic.snapshots.SnapshotStore; in process: MemorySnapshots."""

    def load(self) -> dict | None:
        """The last snapshot saved, or None; StoreUnavailable when it cannot be read."""

    def save(self, snapshot: dict) -> None:
        """Replace the snapshot (visible to the next load at once); StoreUnavailable on failure."""


class MemorySnapshots:
    def __init__(self) -> None:
        self.snapshot: dict | None = None

    def load(self) -> dict | None:
        return json.loads(json.dumps(self.snapshot)) if self.snapshot is not None else None  # a copy, as stored

    def save(self, snapshot: dict) -> None:
        self.snapshot = json.loads(json.dumps(snapshot))


@dataclass
class DetectionStats:
    events: int = 0
    skipped: int = 0
    alerts: list[AlertEvent] = field(default_factory=list)
    delivered: int = 0


class DetectionStage:
    def __init__(
        self,
        source: TopicReader,
        tracker: NewsTracker,
        outbox: Outbox,
        snapshots: Snapshots | None = None,
        deliver: Callable[[], Delivered] | None = None,
        snapshot_every: int = 10,
        batch_size: int = 500,
        health=None,
        progress: Progress | None = None,
        metrics: DetectionMetrics | None = None,
    ) -> None:
        self.source = source
        # a log line every 30 s: scored items read, alerts, late items (the embedded default passes none)
        self.progress = progress
        self.tracker = tracker
        self.outbox = outbox
        self.snapshots = snapshots
        self.deliver = deliver
        self.snapshot_every = snapshot_every
        self.batch_size = batch_size
        self.health = health  # monitor.observability.Health: /healthz says whether the loop turns
        self.stats = DetectionStats()
        self.metrics = metrics
        self._late_counted = 0
        self._lag_checked = 0.0
        self._unrecorded: list[AlertEvent] = []
        self._offsets: dict[str, int] = {}
        self._batches = 0
        self._stop = threading.Event()

    @classmethod
    def resume(
        cls, source: TopicReader, config: TrackerConfig, outbox: Outbox, snapshots: Snapshots | None, **kw
    ) -> DetectionStage:
        """Start from the last snapshot (tracker + offsets), or from the beginning of the topic."""
        saved = snapshots.load() if snapshots else None
        tracker = NewsTracker.restore(saved["tracker"], config) if saved else NewsTracker(config)
        source.start({int(p): o for p, o in (saved or {}).get("offsets", {}).items()})
        stage = cls(source, tracker, outbox, snapshots, **kw)
        stage._offsets = dict((saved or {}).get("offsets", {}))
        log.info(
            "detection resumed from %s",
            f"a snapshot at offsets {stage._offsets}" if saved else "the beginning of the scored topic",
        )
        return stage

    def stop(self) -> None:
        self._stop.set()

    def run(self, max_batches: int | None = None, idle_timeout_s: float | None = None) -> DetectionStats:
        """Consume until stopped; with `idle_timeout_s`, until the input has ended: the scored topic
        is read to its end. If every news partition was announced caught up too, the input has
        ended: the buckets left open are closed (`finish`), as the embedded default does at the end
        of its file; otherwise they stay open (in the snapshot) for what is still to come. Before an
        idle exit, alerts Slack has not taken yet are tried again as their back-off allows, for up
        to `DELIVERY_GRACE_S` (what is still pending then waits in the outbox for the next run)."""
        import time

        idle_since = time.monotonic()
        idle_exit = False
        if self.progress is None:
            self.progress = Progress("detection", unit="records", bar=False)
        while not self._stop.is_set() and (max_batches is None or self._batches < max_batches):
            if self.health is not None:
                self.health.loop_turned()
            messages = self.source.poll(self.batch_size, 1.0)
            if time.monotonic() - self._lag_checked > 5:
                self._measure_lag()
            if messages:
                idle_since = time.monotonic()
                self._process(messages)
            elif idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                if caught_up(self.source):
                    if self.tracker.all_caught_up():
                        self.finish()
                    else:  # a scoring instance is behind or gone: the last buckets stay open for it
                        log.info(
                            "idle exit with buckets open: news partitions not caught up yet: %s",
                            sorted(s for s in self.tracker.sources if s not in self.tracker.idle)[:10],
                        )
                    idle_exit = True
                    break
                idle_since = time.monotonic()  # behind, or the broker cannot say: not idle
            self._deliver()
        self._save_snapshot()
        done = self._deliver()
        deadline = time.monotonic() + DELIVERY_GRACE_S
        while idle_exit and done is not None and done.pending and not done.refused and time.monotonic() < deadline:
            time.sleep(0.5)  # the input has ended: nothing to detect while waiting for Slack
            done = self._deliver()
        self._measure_lag()
        self.progress.close()
        log.info(
            "detection stopped: %d scored items read, %d late (older than their partition's watermark: left out), %d "
            "alert events",
            self.stats.events,
            self.tracker.late,
            len(self.stats.alerts),
        )
        return self.stats

    def _measure_lag(self) -> None:
        import time

        self._lag_checked = time.monotonic()
        if self.metrics is None:
            return
        lag = self.source.lag()
        if lag is not None:
            self.metrics.lag.set(lag)

    def drain(self) -> None:
        """Process everything the source holds now (the embedded default, between scoring batches)."""
        while True:
            messages = self.source.poll(self.batch_size, 0.0)
            if not messages:
                break
            self._process(messages)
        if self.snapshots is None and self._offsets:  # nothing to persist: what is counted is done with
            self.source.commit({(self.source.topic, int(p)): o for p, o in self._offsets.items()})

    def finish(self) -> None:
        """The input has ended: close the buckets still open and record what they raise."""
        self._unrecorded += self.tracker.finish()
        self._record()

    def _process(self, messages) -> None:
        for m in messages:
            try:
                record = json.loads(m.value)
                if Watermark.is_watermark(record):  # a scoring instance read this news partition to its end
                    mark = Watermark.from_json(record)
                    self._unrecorded += self.tracker.caught_up(mark.position.source, mark.partitions)
                else:
                    event = ScoredEvent.from_json(record)
                    self.stats.events += 1
                    self._unrecorded += self.tracker.add(event)
            except (ValueError, KeyError, TypeError) as exc:
                self.stats.skipped += 1  # the scored topic is ours; a bad record is a bug, not an outage
                if self.metrics is not None:
                    self.metrics.skipped.inc()
                log.error("skipping scored record at %s/%d/%d: %s", m.topic, m.partition, m.offset, exc)
            self._offsets[str(m.partition)] = m.offset + 1
        self._record()
        self._batches += 1
        if self.metrics is not None:
            m = self.metrics
            m.records.inc(len(messages))
            m.late.inc(self.tracker.late - self._late_counted)
            self._late_counted = self.tracker.late
            if self.tracker.watermark is not None:
                m.watermark.set(self.tracker.watermark.timestamp())
        if self.progress is not None:
            self.progress.update(len(messages), alerts=len(self.stats.alerts), late=self.tracker.late)
        if self._batches % self.snapshot_every == 0:
            self._save_snapshot()

    def _record(self) -> None:
        import time

        delay = 0.5
        while self._unrecorded and not self._stop.is_set():
            try:
                self.outbox.record(self._unrecorded, datetime.now(timezone.utc))
                if self.metrics is not None:
                    for a in self._unrecorded:
                        self.metrics.alert_events.labels(kind=a.kind, severity=a.severity, status=a.status).inc()
                self.stats.alerts += self._unrecorded
                self._unrecorded = []
            except StoreUnavailable as exc:
                if self.metrics is not None:
                    self.metrics.store_errors.inc()
                log.warning("%s; alerts kept in memory, retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(30.0, delay * 2)

    def _save_snapshot(self) -> None:
        if self.snapshots is None or self._unrecorded:
            return  # never snapshot past alerts that are not yet in the outbox
        try:
            self.snapshots.save({"offsets": self._offsets, "tracker": self.tracker.snapshot()})
            self.source.commit({(self.source.topic, int(p)): o for p, o in self._offsets.items()})
            if self.metrics is not None:
                self.metrics.last_snapshot.set_to_current_time()
        except StoreUnavailable as exc:
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            log.warning("snapshot not saved (%s); the next one will be", exc)

    def _deliver(self) -> Delivered | None:
        """One delivery pass (None: no Slack, or the outbox could not be read)."""
        if self.deliver is None:
            return None
        try:
            done = self.deliver()
        except StoreUnavailable as exc:
            if self.metrics is not None:
                self.metrics.store_errors.inc()
            log.warning("alert delivery postponed: %s", exc)
            return None
        self.stats.delivered += done.sent
        if self.metrics is not None:
            m = self.metrics
            for outcome, n in (("sent", done.sent), ("retry", done.retried), ("failed", done.failed),
                               ("followup", done.followups)):  # fmt: skip
                m.slack_attempts.labels(outcome=outcome).inc(n)
            m.pending.set(done.pending)
            if done.sent or done.followups:
                m.last_sent.set_to_current_time()
        return done

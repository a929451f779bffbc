"""The scoring daemon's consume loop: poll → process → add to sinks → flush → commit.

Offsets are committed only after the history store (Elasticsearch) and the publisher (scored and
dead-letter topics) accepted everything the batch produced. If any of them fails, nothing is
committed, the source is rewound to the batch's first offsets, and the batch comes again after a
back-off; writes are idempotent (document id = item id), so that is safe.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from monitor.errors import (
    BearwatchError,
    SinkUnavailable,
    SourceUnavailable,
    StoreUnavailable,
)
from monitor.model_artifact import ModelArtifact
from monitor.observability import Health, ScoringMetrics
from monitor.pipeline import STAGES, PipelineSettings, ScoringPipeline, dead_letter
from monitor.progress import Progress
from monitor.records import Position, Watermark
from monitor.registry import CURRENT, ModelRegistry
from monitor.resources import shipped_model
from monitor.retrieval.history import HistoryStore
from monitor.retrieval.memory import RetrievalMemory
from monitor.scoring.onnx import OnnxScorer
from monitor.settings import ModelSettings, MonitorSettings
from monitor.sinks.base import WATERMARK_HEADER, Publisher, Record, source_key
from monitor.sources.base import Source, batch_offsets, caught_up

log = logging.getLogger("bearwatch.monitor")


class ModelProvider:
    """The scorer to use: a model directory, or the current version of a registry (hot-reloaded).
    The constructor only finds the path; `start` loads the model."""

    scorer: OnnxScorer

    def __init__(self, settings: ModelSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self.path = Path(settings.path) if settings.path else shipped_model()
        self.is_registry = (self.path / CURRENT).exists() or (self.path / "versions").is_dir()
        self.clock = clock
        self._checked = 0.0

    def start(self) -> ModelProvider:
        """Load the model (the registry's current version); returns the provider."""
        self.scorer = self._load(self._resolve())
        return self

    def _resolve(self) -> ModelArtifact:
        return ModelRegistry(self.path).current() if self.is_registry else ModelArtifact.load(self.path)

    def _load(self, artifact: ModelArtifact) -> OnnxScorer:
        s = self.settings
        return OnnxScorer.load(artifact, device=s.device, threads=s.threads, variant=s.variant, batch_size=s.batch_size)

    def maybe_reload(self) -> bool:
        """Between batches: switch to the registry's current version if it changed."""
        if not self.is_registry or self.clock() - self._checked < self.settings.reload_check_seconds:
            return False
        self._checked = self.clock()
        current = ModelRegistry(self.path).current_version()
        if current is None or current == self.scorer.version:
            return False
        try:
            scorer = self._load(ModelRegistry(self.path).load(current))
        except BearwatchError as exc:
            log.error("model %s could not be loaded, still serving %s: %s", current, self.scorer.version, exc)
            return False
        log.info("model reloaded: %s -> %s", self.scorer.version, scorer.version)
        self.scorer = scorer
        return True


@dataclass
class RunStats:
    batches: int = 0
    consumed: int = 0
    scored: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    write_failures: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


class ScoringApp:
    """Owns the consume loop. ``run(max_batches=…, idle_timeout_s=…)`` bounds it for tests and demos."""

    def __init__(
        self,
        source: Source,
        store: HistoryStore,
        publisher: Publisher,
        models: ModelProvider,
        pipeline_settings: PipelineSettings,
        settings: MonitorSettings,
        metrics: ScoringMetrics | None = None,
        health: Health | None = None,
        on_batch=None,
        memory: RetrievalMemory | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.source = source
        # how far it is: a log line every progress_seconds (a daemon, a backlog), or the caller's bar
        self.progress = progress or Progress("scoring", unit="messages", every_s=settings.progress_seconds, bar=False)
        self._lag: int | None = None
        self.memory = memory
        self.store = store
        self.publisher = publisher
        self.models = models
        self.pipeline_settings = pipeline_settings
        self.settings = settings
        self.metrics = metrics or ScoringMetrics()
        self.health = health or Health()
        self.on_batch = on_batch  # called with (messages, result) after a committed batch
        self.stats = RunStats()
        self._stop = threading.Event()
        self._backoff = settings.retry_initial_seconds
        self._pipeline = ScoringPipeline(models.scorer, store, pipeline_settings, memory)
        self._dead_sent: set[tuple] = set()  # source positions whose dead letter this batch already published
        self._ahead: list = []  # the next batch, polled while this one is processed (settings.prefetch)
        self._announced: dict[tuple[str, int], int] = {}  # partition -> end offset announced caught up
        self._announce_checked = 0.0
        self._announce_model()

    def stop(self) -> None:
        """Finish the batch in hand (or abandon it if it cannot be written), then return from run()."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _announce_model(self) -> None:
        scorer = self.models.scorer
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(version=scorer.version, provider=scorer.provider).set(1)
        self.health.model_version = scorer.version

    def run(self, max_batches: int | None = None, idle_timeout_s: float | None = None) -> RunStats:
        idle_since = time.monotonic()
        last_lag = 0.0
        while not self.stopping and (max_batches is None or self.stats.batches < max_batches):
            self.health.loop_turned()
            if self.models.maybe_reload():
                self._pipeline = ScoringPipeline(self.models.scorer, self.store, self.pipeline_settings, self.memory)
                self._announce_model()
            try:
                messages, self._ahead = (
                    self._ahead or self.source.poll(self.settings.batch_size, self.settings.poll_timeout_seconds),
                    [],
                )
            except SourceUnavailable as exc:
                self._failed(exc)
                continue
            if time.monotonic() - last_lag > 5:
                lags = self.source.partition_lags()
                self._lag = None if lags is None else sum(lags.values())
                if lags is not None:
                    self.metrics.lag.clear()  # partitions a rebalance took away are not left at their last value
                    for (topic, partition), behind in lags.items():
                        self.metrics.lag.labels(topic=topic, partition=str(partition)).set(behind)
                last_lag = time.monotonic()
            if not messages:
                self._announce_caught_up()
                waiting_for_partitions = not self.source.has_assignment()
                if waiting_for_partitions:
                    idle_since = time.monotonic()
                elif idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    if caught_up(self.source):
                        break
                    idle_since = time.monotonic()  # behind, or the broker cannot say (it is down): not idle
                continue
            idle_since = time.monotonic()
            if self.settings.prefetch and self.source.replayable:
                self._poll_ahead()
            self._process(messages)
        if self._ahead:  # run() returns with the source where processing stopped
            self.source.rewind(batch_offsets(self._ahead)[0])
            self._ahead = []
        self.progress.close()
        return self.stats

    def _poll_ahead(self) -> None:
        """The next batch, if the source already holds one (no waiting): its encoding then overlaps
        this batch's writes. Its messages are processed next, in order; nothing of them is
        committed before they are."""
        try:
            self._ahead = self.source.poll(self.settings.batch_size, 0.0)
        except SourceUnavailable as exc:  # the next regular poll meets it again and reports it
            log.debug("polling ahead failed: %s", exc)
            self._ahead = []

    def _process(self, messages) -> None:
        _, next_offsets = batch_offsets(messages)
        try:
            result = self._pipeline.process(
                messages, partitions=self._partitions({m.topic for m in messages}), upcoming=self._ahead
            )
            # The store first: a document it refuses for good becomes a dead letter before anything
            # is published, and an outage publishes nothing (so a retried batch publishes once).
            self.store.add(result.documents)
            result.reject(self.store.flush(), "index")
            self._publish(result)
        except (StoreUnavailable, SinkUnavailable) as exc:
            self._failed(exc)
            # Nothing committed: the batch comes again, and the one polled ahead after it (a
            # partition only that one read must go back too).
            self.source.rewind(batch_offsets([*messages, *self._ahead])[0])
            self._ahead = []
            return
        try:
            self.source.commit(next_offsets)
            self.metrics.commits.inc()
            self._dead_sent.clear()
        except SourceUnavailable as exc:
            # Written but not committed: the batch will be replayed and rewritten identically.
            log.warning("%s; the batch will be replayed (idempotent writes)", exc)
        self._succeeded(messages, result)

    def _publish(self, result) -> None:
        """Scored records and dead letters; a dead letter already accepted by an earlier attempt at
        this batch is not sent again (one record per source position), and a record the destination
        refuses for good is dead-lettered (or, for a dead letter, sent again without its value)."""
        dead = [r for r in result.dead if _position(r) not in self._dead_sent]
        for record in result.scored + dead:
            self.publisher.add(record)
        try:
            refused = self.publisher.flush()
        except SinkUnavailable as exc:
            self._dead_sent.update(_position(r) for r in exc.delivered if r.topic == self.pipeline_settings.dlq_topic)
            raise
        refused_ids = {id(r) for r, _ in refused}
        self._dead_sent.update(_position(r) for r in dead if id(r) not in refused_ids)
        if not refused:
            return
        by_record = {id(r): i for i, r in enumerate(result.scored)}
        again = []
        for record, reason in refused:
            log.error("%s: %s", record.topic, reason)
            if id(record) in by_record:  # stored, but the detection stage cannot hear of it
                message = result.messages[by_record[id(record)]]
                again.append(
                    dead_letter(
                        message,
                        f"{reason} (the document is stored, not announced)",
                        "publish",
                        self.pipeline_settings.dlq_topic,
                    )
                )
            else:
                again.append(
                    replace(
                        record,
                        value=b"",
                        headers=(*record.headers, ("bearwatch.value_dropped", reason.encode()[:1000])),
                    )
                )
        for record in again:
            self.publisher.add(record)
        for record, reason in self.publisher.flush():
            raise SinkUnavailable(f"{record.topic} refused even a dead letter without its value: {reason}")
        self._dead_sent.update(_position(r) for r in again)

    def _partitions(self, topics) -> dict[str, int]:
        return {t: self.source.partition_count(t) for t in topics}

    def _announce_caught_up(self) -> None:
        """Tell the detection stage which news partitions this instance has read to their end, once
        per end offset: their event-time watermark then holds no bucket open (monitor.detection)."""
        if time.monotonic() - self._announce_checked < 1.0:
            return
        self._announce_checked = time.monotonic()
        fresh = [(tp, end) for tp, end in self.source.caught_up_partitions() if self._announced.get(tp) != end]
        if not fresh:
            return
        partitions = self._partitions({topic for (topic, _), _ in fresh})
        for (topic, partition), end in fresh:
            mark = Watermark(Position(topic, partition, end), partitions[topic])
            value = json.dumps(mark.to_json()).encode()
            self.publisher.add(
                Record(self.pipeline_settings.scored_topic, value, source_key(topic, partition), (WATERMARK_HEADER,))
            )
        try:
            self.publisher.flush()
        except SinkUnavailable as exc:
            log.warning("caught-up marks not published (%s); next time", exc)
            return
        self._announced.update(fresh)

    def _succeeded(self, messages, result) -> None:
        self._backoff = self.settings.retry_initial_seconds
        self.health.write_succeeded()
        s, m = self.stats, self.metrics
        s.batches += 1
        s.consumed += len(messages)
        s.scored += len(result.documents)
        s.dead_letters += result.dead_letters
        s.duplicates += result.duplicates
        m.consumed.inc(len(messages))
        m.scored.inc(len(result.documents))
        for stage, n in result.dead_by_stage.items():
            m.dead_letters.labels(stage=stage).inc(n)
        m.duplicates.inc(result.duplicates)
        m.redelivered.inc(result.redelivered)
        for stage, seconds in result.seconds.items():
            s.seconds[stage] += seconds
            m.stage_seconds.labels(stage=stage).observe(seconds)
        self.progress.update(len(messages), batches=s.batches, lag=self._lag, dead_letters=s.dead_letters)
        if self.on_batch:
            self.on_batch(messages, result)

    def _failed(self, exc: Exception) -> None:
        self.stats.write_failures += 1
        self.metrics.write_failures.inc()
        self.health.write_failed(str(exc))
        delay = self._backoff * (0.5 + random.random())
        log.warning("%s; retrying in %.1fs (nothing committed)", exc, delay)
        self._stop.wait(delay)  # a stop request ends the wait at once
        self._backoff = min(self.settings.retry_max_seconds, self._backoff * 2)


def _position(record: Record) -> tuple:
    """The source position a dead letter stands for (from its headers)."""
    h = dict(record.headers)
    return (h.get("bearwatch.source.topic"), h.get("bearwatch.source.partition"), h.get("bearwatch.source.offset"))

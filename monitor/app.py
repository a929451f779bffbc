"""The scoring daemon's consume loop: poll → process → add to sinks → flush → commit.

Offsets are committed only after the history store (Elasticsearch) and the publisher (scored and
dead-letter topics) accepted everything the batch produced. If any of them fails, nothing is
committed, the source is rewound to the batch's first offsets, and the batch comes again after a
back-off; writes are idempotent (document id = item id), so that is safe.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from monitor.errors import BearwatchError
from monitor.model_artifact import ModelArtifact
from monitor.observability import Health, ScoringMetrics
from monitor.pipeline import STAGES, PipelineSettings, ScoringPipeline
from monitor.registry import CURRENT, ModelRegistry
from monitor.retrieval.history import HistoryStore, StoreUnavailable
from monitor.scoring.onnx import OnnxScorer
from monitor.settings import ModelSettings, MonitorSettings
from monitor.sinks.base import Publisher
from monitor.sinks.kafka import SinkUnavailable
from monitor.sources.base import Source, batch_offsets, caught_up
from monitor.sources.kafka import SourceUnavailable

log = logging.getLogger("bearwatch.monitor")


class ModelProvider:
    """The scorer to use: a model directory, or the current version of a registry (hot-reloaded)."""

    def __init__(self, settings: ModelSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.is_registry = (self.path / CURRENT).exists() or (self.path / "versions").is_dir()
        self.clock = clock
        self._checked = 0.0
        self.scorer = self._load(self._resolve())

    def _resolve(self) -> ModelArtifact:
        return ModelRegistry(self.path).current() if self.is_registry else ModelArtifact.load(self.path)

    def _load(self, artifact: ModelArtifact) -> OnnxScorer:
        s = self.settings
        return OnnxScorer(artifact, device=s.device, threads=s.threads, variant=s.variant, batch_size=s.batch_size)

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
        self, source: Source, store: HistoryStore, publisher: Publisher, models: ModelProvider,
        pipeline_settings: PipelineSettings, settings: MonitorSettings,
        metrics: ScoringMetrics | None = None, health: Health | None = None, on_batch=None,
    ) -> None:
        self.source = source
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
        self._pipeline = ScoringPipeline(models.scorer, store, pipeline_settings)
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
                self._pipeline = ScoringPipeline(self.models.scorer, self.store, self.pipeline_settings)
                self._announce_model()
            try:
                messages = self.source.poll(self.settings.batch_size, self.settings.poll_timeout_seconds)
            except SourceUnavailable as exc:
                self._failed(exc)
                continue
            if time.monotonic() - last_lag > 5 and hasattr(self.source, "lag"):
                lag = self.source.lag()
                if lag is not None:
                    self.metrics.lag.set(lag)
                last_lag = time.monotonic()
            if not messages:
                waiting_for_partitions = hasattr(self.source, "has_assignment") and not self.source.has_assignment()
                if waiting_for_partitions:
                    idle_since = time.monotonic()
                elif idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    if caught_up(self.source):
                        break
                    idle_since = time.monotonic()  # behind, or the broker cannot say (it is down): not idle
                continue
            idle_since = time.monotonic()
            self._process(messages)
        return self.stats

    def _process(self, messages) -> None:
        first, next_offsets = batch_offsets(messages)
        try:
            result = self._pipeline.process(messages)
            self.store.add(result.documents)
            for record in result.records:
                self.publisher.add(record)
            self.store.flush()
            self.publisher.flush()
        except (StoreUnavailable, SinkUnavailable) as exc:
            self._failed(exc)
            self.source.rewind(first)  # nothing committed: the batch comes again
            return
        try:
            self.source.commit(next_offsets)
            self.metrics.commits.inc()
        except SourceUnavailable as exc:
            # Written but not committed: the batch will be replayed and rewritten identically.
            log.warning("%s; the batch will be replayed (idempotent writes)", exc)
        self._succeeded(messages, result)

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
        m.dead_letters.inc(result.dead_letters)
        m.duplicates.inc(result.duplicates)
        m.redelivered.inc(result.redelivered)
        for stage, seconds in result.seconds.items():
            s.seconds[stage] += seconds
            m.stage_seconds.labels(stage=stage).observe(seconds)
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


def pipeline_settings_from(retrieval, monitor, scored_topic: str, dlq_topic: str) -> PipelineSettings:
    from datetime import timedelta

    return PipelineSettings(
        scored_topic=scored_topic, dlq_topic=dlq_topic,
        dedup_window=timedelta(hours=monitor.dedup_window_hours), related_k=retrieval.k,
        related_method=retrieval.history, lookback=timedelta(hours=retrieval.lookback_hours),
    )


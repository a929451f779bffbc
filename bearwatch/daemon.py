"""Wiring of the scoring stage: real adapters (Kafka, Elasticsearch) or embedded ones (files).

The business logic (monitor.pipeline, monitor.app) is the same either way; only what is plugged
in here differs.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

from monitor.app import ModelProvider, ScoringApp, pipeline_settings_from
from monitor.observability import Health, ScoringMetrics, serve
from monitor.settings import Settings

log = logging.getLogger("bearwatch")


def install_signal_handlers(app) -> None:
    """SIGTERM/SIGINT: finish or abandon the batch in hand, commit what is done, exit 0."""

    def handler(signum, _frame) -> None:
        log.info("%s received: stopping after the current batch", signal.Signals(signum).name)
        app.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def build_kafka_app(settings: Settings, client_id: str = "bearwatch-monitor") -> ScoringApp:
    from monitor.retrieval.elasticsearch import ElasticsearchHistory, connect, ensure_indices
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import KafkaSource, ensure_topics

    k = settings.kafka
    models = ModelProvider(settings.model)
    es = connect(settings.elasticsearch)
    ensure_indices(es, settings.elasticsearch, models.scorer.embedding_dims)
    if k.create_topics:
        ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])
    metrics, health = ScoringMetrics(), Health()
    app = ScoringApp(
        source=KafkaSource(k, client_id=client_id),
        store=ElasticsearchHistory(es, settings.elasticsearch),
        publisher=KafkaPublisher(k, client_id=f"{client_id}-publisher"),
        models=models,
        pipeline_settings=pipeline_settings_from(settings.retrieval, settings.monitor, k.scored_topic, k.dlq_topic),
        settings=settings.monitor, metrics=metrics, health=health,
    )
    if settings.metrics.port:
        server = serve(settings.metrics.host, settings.metrics.port, metrics.registry, health)
        log.info("metrics and health on http://%s:%d/metrics, /healthz", settings.metrics.host, server.server_address[1])
    log.info(
        "scoring %s -> Elasticsearch %s, scored topic %s, dead letters %s; model %s on %s",
        k.news_topic, settings.elasticsearch.index("news"), k.scored_topic, k.dlq_topic, models.scorer.version, models.scorer.provider,
    )
    return app


def produce_file(settings: Settings, path: str, rate: float | None, topic: str | None = None) -> int:
    """Publish a JSONL news file to Kafka, one message per line (bytes as they are), keyed by id."""
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import ensure_topics

    topic = topic or settings.kafka.news_topic
    if settings.kafka.create_topics:
        ensure_topics(settings.kafka, [topic])
    publisher = KafkaPublisher(settings.kafka, client_id="bearwatch-produce")
    sent = 0
    started = time.monotonic()
    with open(path, "rb") as fh:
        for raw in fh:
            value = raw.rstrip(b"\r\n")
            if not value.strip():
                continue
            publisher.add(Record(topic, value, _key_of(value)))
            sent += 1
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    publisher.flush()
                    time.sleep(delay)
            elif sent % 1000 == 0:
                publisher.flush()
    publisher.flush()
    publisher.close()
    return sent


def _key_of(value: bytes) -> bytes | None:
    try:
        item_id = json.loads(value).get("id")
    except (ValueError, AttributeError):
        return None  # malformed lines are sent as they are: the monitor dead-letters them
    return str(item_id).encode() if item_id is not None else None


def build_embedded_app(settings: Settings, input_path: str | None, out_dir: Path, on_batch=None) -> ScoringApp:
    """The embedded default: file source, in-process history, JSONL outputs in out_dir."""
    from monitor.retrieval.history import EmbeddedHistory
    from monitor.sinks.file import FilePublisher
    from monitor.sources.file import FileSource

    models = ModelProvider(settings.model)
    k = settings.kafka
    return ScoringApp(
        source=FileSource(input_path, state_file=out_dir / "offsets.json"),
        store=EmbeddedHistory(out_dir / "history"),
        publisher=FilePublisher(out_dir),
        models=models,
        pipeline_settings=pipeline_settings_from(settings.retrieval, settings.monitor, k.scored_topic, k.dlq_topic),
        settings=settings.monitor,
        health=Health(),
        on_batch=on_batch,
    )


def demo_input() -> Path:
    return Path(__file__).resolve().parent.parent / "monitor" / "demo" / "news.jsonl"


def default_model_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "models" / "default"

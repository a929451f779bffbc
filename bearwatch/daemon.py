"""Wiring of the scoring stage: real adapters (Kafka, Elasticsearch) or embedded ones (files).

The business logic (monitor.pipeline, monitor.app) is the same either way; only what is plugged
in here differs.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from monitor.app import ModelProvider, ScoringApp
from monitor.labels_store import Label
from monitor.observability import DetectionMetrics, Health, ScoringMetrics
from monitor.progress import Progress, count_lines
from monitor.resources import demo_stream
from monitor.settings import Settings
from monitor.wiring import (
    pipeline_settings,
    serve_health,
    slack_delivery,
    tracker_config,
)

log = logging.getLogger("bearwatch")


def install_signal_handlers(app) -> None:
    """SIGTERM/SIGINT: finish or abandon the batch in hand, commit what is done, exit 0."""

    def handler(signum, _frame) -> None:
        log.info("%s received: stopping after the current batch", signal.Signals(signum).name)
        app.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def build_kafka_app(settings: Settings, client_id: str = "bearwatch-monitor") -> ScoringApp:
    from monitor.elastic.client import connect, ensure_indices
    from monitor.elastic.history import ElasticsearchHistory
    from monitor.elastic.memory import ElasticsearchMemory
    from monitor.indices import LABELS
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import KafkaSource, ensure_topics

    k = settings.kafka
    models = ModelProvider(settings.model).start()
    es = connect(settings.elasticsearch)
    ensure_indices(es, settings.elasticsearch, models.scorer.embedding_dims)
    if k.create_topics:
        ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])
    metrics, health = ScoringMetrics(), Health()
    app = ScoringApp(
        source=KafkaSource(k, client_id=client_id).start(),
        store=ElasticsearchHistory(es, settings.elasticsearch),
        publisher=KafkaPublisher(k, client_id=f"{client_id}-publisher"),
        models=models,
        pipeline_settings=pipeline_settings(settings),
        settings=settings.monitor,
        metrics=metrics,
        health=health,
        memory=(
            ElasticsearchMemory(es, settings.elasticsearch.index(LABELS), settings.retrieval.memory_search)
            if settings.retrieval.memory
            else None
        ),
    )
    serve_health(settings, "scoring", metrics.registry, health)
    log.info(
        "scoring %s -> Elasticsearch %s, scored topic %s, dead letters %s; model %s on %s",
        k.news_topic,
        settings.elasticsearch.index("news"),
        k.scored_topic,
        k.dlq_topic,
        models.scorer.version,
        models.scorer.provider,
    )
    return app


def produce_file(settings: Settings, path: str, rate: float | None, topic: str | None = None) -> int:
    """Publish a JSONL news file to Kafka, one message per line (bytes as they are), keyed by id."""
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import ensure_topics

    topic = topic or settings.kafka.news_topic
    open(path, "rb").close()  # a file that cannot be read is said before any broker is contacted
    total = count_lines(path)
    if settings.kafka.create_topics:
        ensure_topics(settings.kafka, [topic])
    publisher = KafkaPublisher(settings.kafka, client_id="bearwatch-produce")
    sent = 0
    started = time.monotonic()
    progress = Progress("produce", total=total, unit="lines", every_s=settings.monitor.progress_seconds)
    with progress, open(path, "rb") as fh:
        for raw in fh:
            progress.update()
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


def build_embedded_app(
    settings: Settings,
    input_path: str | None,
    out_dir: Path,
    on_batch=None,
    taps: dict | None = None,
    labels: Sequence[Label] = (),
    progress: Progress | None = None,
) -> ScoringApp:
    """The embedded default: file source, in-process history, JSONL outputs in out_dir (`taps`:
    in-process readers of some topics, see FilePublisher); `labels` are its retrieval memory."""
    from monitor.pipeline import VECTOR_METHODS
    from monitor.retrieval.embedded import EmbeddedHistory
    from monitor.retrieval.memory import InProcessMemory
    from monitor.sinks.file import FilePublisher
    from monitor.sources.file import FileSource

    models = ModelProvider(settings.model).start()
    return ScoringApp(
        source=FileSource(input_path, state_file=out_dir / "offsets.json"),
        store=EmbeddedHistory(out_dir / "history", vectors=settings.retrieval.history in VECTOR_METHODS),
        publisher=FilePublisher(out_dir, taps),
        models=models,
        pipeline_settings=pipeline_settings(settings),
        settings=settings.monitor,
        health=Health(),
        on_batch=on_batch,
        memory=InProcessMemory(labels) if settings.retrieval.memory else None,
        progress=progress,
    )


@dataclass
class DemoRun:
    documents: list[dict]  # every scored document as it would be indexed, less its vector and timings
    alerts: list[dict]
    summary: str  # what the demo prints
    page: Path  # the HTML report
    late: int = 0  # items older than their partition's event-time watermark: left out of detection


def run_demo(
    settings: Settings, input_path: str | None, out: Path, announce=None, labels: Sequence[Label] = ()
) -> DemoRun:
    """The embedded default end to end: score the stream in-process, detect, write the outputs and the HTML report."""
    from bearwatch.demo_report import DemoReport
    from bearwatch.report import render
    from monitor.sources.memory import MemoryTopic

    scored = MemoryTopic(settings.kafka.scored_topic)
    report = DemoReport(scored, tracker_config(settings))
    path = input_path or str(demo_stream())
    progress = Progress("demo", total=count_lines(path), unit="items", every_s=settings.monitor.progress_seconds)
    app = build_embedded_app(
        settings, path, out, on_batch=report.add, taps={scored.topic: scored}, labels=labels, progress=progress
    )
    if announce is not None:
        announce(app)
    began = time.perf_counter()
    stats = app.run(idle_timeout_s=0)
    summary = report.render(stats, out, wall_s=time.perf_counter() - began)
    page = out / "report.html"
    page.write_text(
        render(report.documents, report.alerts, note=f"model {app.models.scorer.version}"), encoding="utf-8"
    )
    return DemoRun(report.documents, report.alerts, summary, page, report.detection.tracker.late)


def build_detection_stage(settings: Settings):
    """The detection stage on Kafka (scored topic) and Elasticsearch (outbox, snapshots), Slack if configured."""
    from monitor.alerting.feedback import Feedback
    from monitor.alerting.message import Headline
    from monitor.alerting.outbox import Delivered, deliver_pending
    from monitor.detection.stage import DetectionStage
    from monitor.elastic.client import call, connect, ensure_indices
    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.elastic.outbox import ElasticsearchOutbox
    from monitor.elastic.snapshots import SnapshotStore
    from monitor.indices import ALERTS, LABELS, NEWS, STATE
    from monitor.records import ScoredItem
    from monitor.sources.kafka import KafkaTopicReader, ensure_topics

    k, es_settings = settings.kafka, settings.elasticsearch
    es = connect(es_settings)
    ensure_indices(es, es_settings, embedding_dims=384)
    if k.create_topics:
        ensure_topics(k, [k.scored_topic])
    outbox = ElasticsearchOutbox(es, es_settings.index(ALERTS))
    slack = slack_delivery(settings)

    def headlines(ids: list[str]) -> list[Headline]:
        if not ids:
            return []
        docs = call(
            "headlines",
            es.mget,
            index=es_settings.index(NEWS),
            ids=ids,
            source_includes=ScoredItem.fields("headline", "url", "published_at", "p_bearish", "model_version"),
        )["docs"]
        return [
            Headline(
                d["_source"]["headline"],
                d["_source"].get("url"),
                d["_source"]["published_at"],
                d["_source"].get("p_bearish", 0.0),
                d["_source"].get("model_version"),
                d["_id"],
            )
            for d in docs
            if d.get("found")
        ]

    secret = settings.slack.signing_secret
    posts = {}
    if secret is not None:
        labels = ElasticsearchLabels(es, es_settings.index(LABELS), es_settings.index(NEWS))
        feedback = Feedback(
            secret, labels.put, lambda ids: {h.item_id or "": h.text for h in headlines(ids)}, outbox.judge
        )
        posts["/slack/actions"] = feedback.handle

    deliver = None
    if slack is not None:

        def deliver() -> Delivered:
            return deliver_pending(outbox, slack, headlines, settings.slack.kibana_url, answers=secret is not None)
    else:
        log.warning(
            "no Slack configured (BEARWATCH_SLACK_TOKEN + slack.channel, or BEARWATCH_SLACK_WEBHOOK_URL): alerts are "
            "only written to %s",
            es_settings.index(ALERTS),
        )
    source = KafkaTopicReader(k, k.scored_topic, group=f"{k.group}-detect")
    snapshots = SnapshotStore(es, es_settings.index(STATE), f"detector:{k.scored_topic}")
    d = settings.detection
    metrics = DetectionMetrics()
    health = serve_health(settings, "detection", metrics.registry, posts=posts)
    return DetectionStage.resume(
        source,
        tracker_config(settings),
        outbox,
        snapshots,
        deliver=deliver,
        snapshot_every=d.snapshot_every_batches,
        batch_size=d.batch_size,
        health=health,
        metrics=metrics,
    )

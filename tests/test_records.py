"""The typed records that cross stage boundaries: one JSON form each, and the index mapping agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.indices import alerts_mapping, news_mapping
from monitor.pipeline import PipelineSettings, ScoringPipeline
from monitor.records import (
    ALERT_FIELDS,
    SCORED_ITEM_FIELDS,
    Alert,
    AlertEvent,
    Position,
    ScoredEvent,
    ScoredItem,
    Watermark,
)
from monitor.resources import shipped_model
from monitor.retrieval.embedded import EmbeddedHistory
from monitor.sources.base import Message

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result():
    from monitor.model_artifact import ModelArtifact
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), threads=1)
    items = [
        {
            "id": "a1",
            "headline": "Acme shares slump after profit warning",
            "published_at": "2026-11-02T09:00:00Z",
            "source": "wire",
            "tickers": ["ACME"],
            "url": "https://news.example/a1",
            "lang": "en",
            "body": "Details.",
        },
        {
            "id": "a2",
            "headline": "ACME SHARES SLUMP AFTER PROFIT WARNING!",
            "published_at": "2026-11-02T09:05:00+01:00",
        },
    ]
    messages = [Message("news", 2, 40 + i, json.dumps(v).encode()) for i, v in enumerate(items)]
    return ScoringPipeline(scorer, EmbeddedHistory(), PipelineSettings("scored", "dlq", related_method="off")).process(
        messages, partitions={"news": 3}
    )


def test_a_stored_document_reads_back_as_the_same_scored_item(result) -> None:
    assert len(result.documents) == 2
    for doc in result.documents:
        item = ScoredItem.from_json(doc)
        assert item.to_json() == doc
        assert json.loads(json.dumps(item.to_json())) == doc


def test_the_news_mapping_has_exactly_the_fields_of_a_scored_item(result) -> None:
    mapped = set(news_mapping()["properties"])
    assert mapped == set(SCORED_ITEM_FIELDS)
    for doc in result.documents:
        assert set(doc) <= mapped  # "dynamic": "strict" would refuse any other field


def test_naming_a_field_that_does_not_exist_fails_at_once() -> None:
    assert ScoredItem.fields("headline", "p_bearish") == ["headline", "p_bearish"]
    with pytest.raises(KeyError, match="headlin"):
        ScoredItem.fields("headlin")


def test_the_scored_record_is_the_event_of_the_stored_item(result) -> None:
    for doc, record in zip(result.documents, result.scored):
        event = ScoredEvent.from_json(json.loads(record.value))
        assert event == ScoredItem.from_json(doc).event(3)
        assert event.source == "news/2" and event.partitions == 3
        assert "embedding" not in json.loads(record.value) and "body" not in json.loads(record.value)
        assert ScoredEvent.from_json(event.to_json()) == event
    first = ScoredEvent.from_json(json.loads(result.scored[0].value))
    assert first.outlet == "wire" and first.tickers == ("ACME",)  # the outlet is not the source partition


def test_a_watermark_reads_back() -> None:
    mark = Watermark(Position("news", 1, 1234), 3)
    doc = json.loads(json.dumps(mark.to_json()))
    assert Watermark.is_watermark(doc) and not Watermark.is_watermark({"id": "x"})
    assert Watermark.from_json(doc) == mark


def test_an_alert_reads_back_and_the_alerts_mapping_has_its_fields() -> None:
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    event = AlertEvent("ticker:ACME@x", "ticker:ACME", "negative_volume", "opened", "high", t0,
                       t0 + timedelta(minutes=15), 7.0, 1.5, 1e-5, ("a1", "a2"))  # fmt: skip
    alert = Alert.opened(event, t0 + timedelta(minutes=16))
    doc = json.loads(json.dumps(alert.to_json()))
    assert (
        doc["key_kind"] == "ticker"
        and doc["delivery"] == "pending"
        and doc["window_start"] == "2026-11-02T09:00:00.000Z"
    )
    assert Alert.from_json(doc) == alert
    sent = Alert.from_json({**doc, "delivery": "sent", "slack_ts": "1.2", "notified": "opened", "last_error": "x"})
    assert Alert.from_json(sent.to_json()) == sent
    assert set(alerts_mapping()["properties"]) == set(ALERT_FIELDS) >= set(sent.to_json())


def test_an_alert_says_how_many_of_its_negatives_named_many_tickers() -> None:
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from monitor.alerting.message import alert_blocks, describe

    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    event = AlertEvent("ticker:ACME|x", "ticker:ACME", "negative_volume", "opened", "high", t0,
                       t0 + timedelta(minutes=15), 4.5, 0.2, 1e-5, ("a1",), ("negative_volume",), 3)  # fmt: skip
    alert = Alert.opened(event, t0)
    assert alert.shared_items == 3 and Alert.from_json(json.loads(json.dumps(alert.to_json()))) == alert
    assert "3 of them name several tickers" in describe(alert)
    assert "3 of them" in json.dumps(alert_blocks(alert, [])[1])
    assert "several tickers" not in describe(replace(alert, shared_items=0))
    assert Alert.from_json({k: v for k, v in alert.to_json().items() if k != "shared_items"}).shared_items == 0


def test_the_shipped_manifest_reads_back_unchanged_and_a_broken_one_says_why() -> None:
    from monitor.errors import ModelArtifactError
    from monitor.model_artifact import Manifest
    from monitor.resources import shipped_model

    doc = json.loads((shipped_model() / "manifest.json").read_text())
    manifest = Manifest.from_json(doc)
    assert manifest.to_json() == doc
    assert manifest.onnx_serve == "int8" and set(manifest.labels["sentiment"]) == {"bearish", "neutral", "bullish"}
    assert manifest.metrics["validation"]
    broken = {k: v for k, v in doc.items() if k != "context"}
    with pytest.raises(ModelArtifactError, match="not a valid manifest .*context"):
        Manifest.from_json(broken)
    with pytest.raises(ModelArtifactError, match="unsupported format_version"):
        Manifest.from_json({**doc, "format_version": 99})


@pytest.mark.parametrize("method", ["off", "bm25", "knn", "both"])
def test_the_vector_is_stored_only_where_related_history_searches_it(method: str) -> None:
    from monitor.model_artifact import ModelArtifact
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), threads=1)
    item = {"id": "v1", "headline": "Acme shares slump", "published_at": "2026-11-02T09:00:00Z"}
    pipeline = ScoringPipeline(scorer, EmbeddedHistory(), PipelineSettings("scored", "dlq", related_method=method))
    (doc,) = pipeline.process([Message("news", 0, 0, json.dumps(item).encode())]).documents
    if method in ("knn", "both"):
        assert len(doc["embedding"]) == scorer.embedding_dims
        assert ScoredItem.from_json(doc).to_json() == doc
    else:
        assert "embedding" not in doc and ScoredItem.from_json(doc).embedding == ()

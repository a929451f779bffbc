"""The scoring daemon against the real Kafka and Elasticsearch: counts, dead letters, offsets,
a crash mid-stream, two instances in one group, and failing writes that must not be committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from monitor.settings import load_settings
from monitor.sinks.base import WATERMARK_HEADER

pytestmark = pytest.mark.services

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
COMPANIES = ["Acme", "Globex", "Initech", "Hooli", "Umbrella", "Stark"]
PHRASES = [
    "shares plunge after profit warning",
    "raises dividend",
    "names new chief executive",
    "beats estimates",
    "faces lawsuit",
    "opens office",
]


def news(n: int, prefix: str = "item") -> list[bytes]:
    out = []
    for i in range(n):
        company = COMPANIES[i % len(COMPANIES)]
        item = {
            "id": f"{prefix}-{i:05d}",
            "published_at": (T0 + timedelta(seconds=30 * i)).isoformat().replace("+00:00", "Z"),
            "headline": f"{company} {PHRASES[(i // len(COMPANIES)) % len(PHRASES)]} ({i})",
            "tickers": [company[:4].upper()],
            "source": "test",
        }
        out.append(json.dumps(item).encode())
    return out


BAD = [
    (b"not json at all", "not JSON"),
    (b'{"id": "x1", "headline": "no time"}', "published_at is required"),
    (b'{"id": "x2", "published_at": "2026-11-02T09:00:00Z", "headline": ""}', "headline is empty"),
    (b'{"id": "x3", "published_at": "2026-11-02T09:00:00Z", "headline": "bytes \xff"}', "not UTF-8"),
]


@pytest.fixture
def env(unique_name: str, tiny_model_run, kafka_bootstrap: str, tmp_path: Path) -> dict:
    from tests.conftest import service_env

    _, model_dir, _ = tiny_model_run
    return service_env(
        unique_name,
        kafka_bootstrap,
        BEARWATCH_KAFKA_PARTITIONS="4",
        BEARWATCH_MODEL_PATH=str(model_dir),
        BEARWATCH_MODEL_THREADS="1",
        BEARWATCH_MONITOR_BATCH_SIZE="50",
    )


@pytest.fixture
def settings(env):
    return load_settings(env=env)


@pytest.fixture(autouse=True)
def cleanup_indices(es_client, unique_name: str):
    from monitor.indices import mappings

    yield
    for name in mappings():
        es_client.indices.delete(index=f"{unique_name}-{name}", ignore_unavailable=True)


def produce(settings, values: list[bytes]) -> None:
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import ensure_topics

    k = settings.kafka
    ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])
    publisher = KafkaPublisher(k)
    for i, value in enumerate(values):
        publisher.add(Record(k.news_topic, value, str(i).encode()))
    publisher.flush()
    publisher.close()


def read_topic(settings, topic: str, want: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(auto_offset_reset="earliest", enable_auto_commit=False, **settings.kafka.client_options())
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def committed_equals_end(settings) -> bool:
    k = settings.kafka
    consumer = KafkaConsumer(group_id=k.group, enable_auto_commit=False, **k.client_options())
    partitions = [TopicPartition(k.news_topic, p) for p in consumer.partitions_for_topic(k.news_topic)]
    ends = consumer.end_offsets(partitions)
    ok = all((consumer.committed(tp) or 0) == ends[tp] for tp in partitions)
    consumer.close()
    return ok


def committed_total(settings) -> int:
    k = settings.kafka
    consumer = KafkaConsumer(group_id=k.group, enable_auto_commit=False, **k.client_options())
    total = sum(
        consumer.committed(TopicPartition(k.news_topic, p)) or 0 for p in consumer.partitions_for_topic(k.news_topic)
    )
    consumer.close()
    return total


def wait_for_docs(es_client, settings, at_least: int, timeout_s: float = 120) -> None:
    """Until the daemon under test has indexed `at_least` documents (the index may not exist yet)."""
    from elasticsearch import NotFoundError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if count_docs(es_client, settings) >= at_least:
                return
        except NotFoundError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} documents after {timeout_s}s")


def count_docs(es_client, settings) -> int:
    index = settings.elasticsearch.index("news")
    es_client.indices.refresh(index=index)
    return es_client.count(index=index)["count"]


def test_n_messages_become_n_documents_and_bad_ones_dead_letters(settings, es_client) -> None:
    from bearwatch.daemon import build_kafka_app

    good = news(120)
    values = good[:60] + [b for b, _ in BAD] + good[60:]
    produce(settings, values)
    # kNN related history: the documents carry their vectors (with bm25 or off they do not)
    settings = replace(settings, retrieval=replace(settings.retrieval, history="knn"))
    app = build_kafka_app(settings)
    stats = app.run(idle_timeout_s=5)
    app.source.close()
    app.publisher.close()

    assert stats.consumed == len(values) and stats.scored == 120 and stats.dead_letters == len(BAD)
    assert count_docs(es_client, settings) == 120
    doc = es_client.get(index=settings.elasticsearch.index("news"), id="item-00007")["_source"]
    for field in (
        "sentiment",
        "p_bearish",
        "topic",
        "model_version",
        "related_ids",
        "timings_ms",
        "kafka",
        "published_at",
    ):
        assert field in doc
    # Elasticsearch 9 leaves vectors out of _source; the item's own vector must find it by kNN.
    from monitor.model_artifact import ModelArtifact
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(settings.model.path), device="cpu")
    vector = scorer.score_texts([doc["headline"]]).embedding[0]
    hits = es_client.search(
        index=settings.elasticsearch.index("news"),
        knn={"field": "embedding", "query_vector": vector.tolist(), "k": 1, "num_candidates": 20},
    )
    assert hits["hits"]["hits"][0]["_id"] == "item-00007"
    assert abs(doc["p_bearish"] + doc["p_neutral"] + doc["p_bullish"] - 1) < 1e-4

    dead = read_topic(settings, settings.kafka.dlq_topic, len(BAD))
    assert sorted(r.value for r in dead) == sorted(b for b, _ in BAD)  # the original bytes
    for record in dead:
        headers = dict(record.headers)
        reason = next(r for b, r in BAD if b == record.value)
        assert reason in headers["bearwatch.error"].decode()
        assert headers["bearwatch.source.topic"].decode() == settings.kafka.news_topic
        assert int(headers["bearwatch.source.offset"]) >= 0
    records = read_topic(settings, settings.kafka.scored_topic, 124)  # 120 items, then 4 caught-up marks
    scored = [r for r in records if WATERMARK_HEADER not in r.headers]
    assert len({json.loads(r.value)["id"] for r in scored}) == 120
    assert all(json.loads(r.value)["kafka"]["partitions"] == 4 for r in scored)
    # every news partition is announced read to its end, after its items (the detector's watermark)
    marks = [json.loads(r.value)["watermark"] for r in records if WATERMARK_HEADER in r.headers]
    assert sorted(m["partition"] for m in marks) == [0, 1, 2, 3] and all(
        m["caught_up"] and m["partitions"] == 4 for m in marks
    )
    assert committed_equals_end(settings)


def daemon(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bearwatch", "monitor", "run", *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_without_warning_then_restarted_ends_with_exactly_n_documents(env, settings, es_client) -> None:
    n = 3000
    produce(settings, news(n, prefix="crash"))
    first = daemon(env)
    wait_for_docs(es_client, settings, 200)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    partial = count_docs(es_client, settings)
    assert 0 < partial < n, "the kill must land mid-stream for this test to mean anything"

    second = daemon(env, "--idle-exit", "5")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert count_docs(es_client, settings) == n
    ids = {
        h["_id"]
        for h in es_client.search(index=settings.elasticsearch.index("news"), size=n, source=False)["hits"]["hits"]
    }
    assert ids == {f"crash-{i:05d}" for i in range(n)}
    assert committed_equals_end(settings)


def test_sigterm_finishes_the_batch_commits_and_exits_zero(env, settings, es_client) -> None:
    produce(settings, news(400, prefix="term"))
    proc = daemon(env)
    wait_for_docs(es_client, settings, 50)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped:" in out
    committed = committed_total(settings)
    assert 0 < committed <= count_docs(es_client, settings)  # what was committed was written first


def test_two_instances_split_the_partitions_and_score_everything_once(env, settings, es_client) -> None:
    from monitor.sources.kafka import ensure_topics

    k = settings.kafka
    ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])
    a = daemon(env, "--idle-exit", "8")
    b = daemon(env, "--idle-exit", "8")
    time.sleep(6)  # both join the group before anything arrives
    n = 800
    produce(settings, news(n, prefix="pair"))
    outs = [p.communicate(timeout=300)[0] for p in (a, b)]
    assert [p.returncode for p in (a, b)] == [0, 0], outs
    consumed = [int(o.split("stopped: ")[1].split(" consumed")[0]) for o in outs]
    assert all(c > 0 for c in consumed), consumed  # each instance got partitions
    assert sum(consumed) == n  # and nothing was scored twice
    assert count_docs(es_client, settings) == n
    assert committed_equals_end(settings)


def test_failing_writes_are_retried_and_never_committed_early(settings, es_client, monkeypatch) -> None:
    from bearwatch.daemon import build_kafka_app
    from monitor.elastic.history import ElasticsearchHistory
    from monitor.errors import StoreUnavailable

    produce(settings, news(100, prefix="flaky")[:50] + [b for b, _ in BAD] + news(100, prefix="flaky")[50:])
    failures = {"left": 3}
    real_flush = ElasticsearchHistory.flush
    commits_while_failing = []

    def flaky_flush(self):  # fault injection: Elasticsearch rejects the first three bulk writes
        if failures["left"] > 0:
            failures["left"] -= 1
            self._pending = []  # as the real flush does: the replayed batch adds its documents again
            raise StoreUnavailable("Elasticsearch bulk index failed: ConnectionError (injected)")
        return real_flush(self)

    monkeypatch.setattr(ElasticsearchHistory, "flush", flaky_flush)
    app = build_kafka_app(settings)
    real_commit = app.source.commit

    def watching_commit(offsets):
        commits_while_failing.append(failures["left"])
        real_commit(offsets)

    app.source.commit = watching_commit
    stats = app.run(idle_timeout_s=5)
    app.source.close()
    app.publisher.close()
    assert stats.write_failures == 3
    assert all(left == 0 for left in commits_while_failing)  # no commit before writes succeeded
    assert count_docs(es_client, settings) == 100
    assert committed_equals_end(settings)
    # the store is written before anything is published: three failed attempts published no dead letter
    dead = read_topic(settings, settings.kafka.dlq_topic, len(BAD) + 1, timeout_s=5)
    assert sorted(r.value for r in dead) == sorted(b for b, _ in BAD)


def test_a_batch_retried_after_a_publish_failure_publishes_each_dead_letter_once(
    settings, es_client, monkeypatch
) -> None:
    from bearwatch.daemon import build_kafka_app
    from monitor.errors import SinkUnavailable
    from monitor.sinks.kafka import KafkaPublisher

    produce(settings, news(30, prefix="pub") + [b for b, _ in BAD])
    real_flush, failed = KafkaPublisher.flush, []

    def flush_then_fail(self):  # fault injection: everything delivered, then the flush reports a failure
        delivered = [r for r, _ in self._futures]
        refused = real_flush(self)
        if not failed and any(r.topic == settings.kafka.dlq_topic for r in delivered):
            failed.append(1)
            raise SinkUnavailable("Kafka did not accept 34 records: KafkaTimeoutError (injected)", delivered)
        return refused

    monkeypatch.setattr(KafkaPublisher, "flush", flush_then_fail)
    app = build_kafka_app(settings)
    stats = app.run(idle_timeout_s=5)
    app.source.close()
    app.publisher.close()
    assert failed and stats.write_failures == 1 and committed_equals_end(settings)
    dead = read_topic(settings, settings.kafka.dlq_topic, len(BAD) + 1, timeout_s=5)
    assert sorted(r.value for r in dead) == sorted(b for b, _ in BAD)  # once each, not once per attempt


def test_an_unreachable_broker_is_not_the_end_of_the_input(settings, es_client) -> None:
    """`--idle-exit` ends a run only when the consumer knows it has read everything. A broker that
    is down polls empty too (the kafka-restart drill at full scale found the monitor exiting during
    a 20 s restart with most of the stream unread)."""
    from bearwatch.daemon import build_kafka_app

    produce(settings, news(40, prefix="before"))
    app = build_kafka_app(settings)
    real_poll, real_lag = app.source.poll, app.source.lag
    blackout: dict = {}

    def poll(n, timeout):  # fault injection: after the first batch, 4 s in which the broker says nothing
        if "until" not in blackout:
            messages = real_poll(n, timeout)
            if messages:
                blackout["until"] = time.monotonic() + 4
                produce(settings, news(40, prefix="during"))  # arrives while the consumer cannot see it
            return messages
        if time.monotonic() < blackout["until"]:
            time.sleep(0.2)
            return []
        return real_poll(n, timeout)

    app.source.poll = poll
    app.source.lag = lambda: None if time.monotonic() < blackout.get("until", 0) else real_lag()
    stats = app.run(idle_timeout_s=1)
    app.source.close()
    app.publisher.close()
    assert stats.scored == 80
    assert count_docs(es_client, settings) == 80

"""One contract per port, run against the in-process implementation (the embedded default's) and the
real one on the real servers: source, publisher, alert outbox, labels store, detector snapshots.
(The history store's contract is tests/test_history_contract.py.) An implementation that passes its
port's suite can be plugged into the stages without changing them: docs/architecture.md."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.alerting.outbox import MemoryOutbox
from monitor.detection.stage import MemorySnapshots
from monitor.elastic.labels import ElasticsearchLabels
from monitor.elastic.outbox import ElasticsearchOutbox
from monitor.elastic.snapshots import SnapshotStore
from monitor.errors import StoreUnavailable
from monitor.indices import ALERTS, LABELS, STATE
from monitor.labels_store import Label, MemoryLabels
from monitor.records import AlertEvent
from monitor.sinks.base import Record
from monitor.sinks.file import FilePublisher
from monitor.sources.base import caught_up
from monitor.sources.file import FileSource
from tests.conftest import ES_URL, KAFKA_BOOTSTRAP

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)
BOTH = ["memory", pytest.param("real", marks=pytest.mark.services)]


def kafka_settings(unique_name: str):
    from monitor.settings import KafkaSettings

    return KafkaSettings(bootstrap=KAFKA_BOOTSTRAP, news_topic=unique_name, group=f"{unique_name}-g")


def es(unique_name: str):
    from monitor.elastic.client import connect, ensure_indices
    from monitor.settings import ElasticsearchSettings

    settings = ElasticsearchSettings(url=ES_URL, index_prefix=unique_name)
    client = connect(settings)
    ensure_indices(client, settings, embedding_dims=8)
    return client, settings


def on_both(request, unique_name: str, memory, real):
    """The fixture body of an Elasticsearch-backed port: the in-process implementation, or the real
    one on fresh indices (deleted afterwards)."""
    if request.param == "memory":
        yield memory()
        return
    from monitor.indices import mappings

    client, settings = es(unique_name)
    try:
        yield real(client, settings)
    finally:
        client.indices.delete(index=",".join(settings.index(name) for name in mappings()))


# --- Source: poll in order, commit, resume after a restart, rewind, say when caught up -------------


class Sources:
    """Writes n messages to one partition and opens sources on them (a restart = a new source)."""

    def __init__(self, kind: str, unique_name: str, tmp_path: Path) -> None:
        self.kind, self.name, self.tmp = kind, unique_name, tmp_path

    def write(self, values: list[bytes]) -> None:
        if self.kind == "memory":
            (self.tmp / "news.jsonl").write_bytes(b"".join(v + b"\n" for v in values))
            return
        from kafka import KafkaProducer

        from monitor.sources.kafka import ensure_topics

        settings = kafka_settings(self.name)
        ensure_topics(settings, [self.name], partitions=1)
        producer = KafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, acks="all")
        for v in values:
            producer.send(self.name, v, partition=0)
        producer.flush()
        producer.close()

    def open(self):
        if self.kind == "memory":
            return FileSource(str(self.tmp / "news.jsonl"), state_file=self.tmp / "offsets.json")
        from monitor.sources.kafka import KafkaSource

        return KafkaSource(kafka_settings(self.name)).start()


def drain(source, want: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += source.poll(want - len(got), 0.5)
    return got


@pytest.fixture(params=BOTH)
def sources(request, unique_name, tmp_path):
    return Sources(request.param, unique_name, tmp_path)


def test_a_source_delivers_everything_once_in_order(sources) -> None:
    values = [json.dumps({"n": i}).encode() for i in range(25)]
    sources.write(values)
    source = sources.open()
    try:
        got = drain(source, 25)
        assert [m.value for m in got] == values
        assert [m.offset for m in got] == list(range(25)) and len({(m.topic, m.partition) for m in got}) == 1
        assert drain(source, 1, timeout_s=2.0) == []  # nothing more
        assert caught_up(source)
        (topic, partition), end = source.caught_up_partitions()[0]
        assert (topic, partition) == (got[0].topic, got[0].partition) and end == 25
        assert source.partition_count(topic) == 1
    finally:
        source.close()


def test_a_source_resumes_after_the_last_commit_and_rewinds_on_request(sources) -> None:
    values = [json.dumps({"n": i}).encode() for i in range(20)]
    sources.write(values)
    source = sources.open()
    assert source.replayable  # what lets the loop poll a batch ahead
    first = drain(source, 12)
    tp = (first[0].topic, first[0].partition)
    source.commit({tp: 8})  # messages 8.. were read but their batch is not done
    source.rewind({tp: 8})
    again = drain(source, 12)
    assert [m.offset for m in again] == list(range(8, 20))
    source.close()
    restarted = sources.open()  # a restart after committing 8: resumes there
    try:
        assert [m.offset for m in drain(restarted, 12)] == list(range(8, 20))
    finally:
        restarted.close()


# --- Publisher: flush makes added records readable, in order, and reports refusals ---------------


class Publishers:
    def __init__(self, kind: str, unique_name: str, tmp_path: Path) -> None:
        self.kind, self.name, self.tmp = kind, unique_name, tmp_path

    def open(self):
        if self.kind == "memory":
            return FilePublisher(self.tmp / "out")
        from monitor.sinks.kafka import KafkaPublisher
        from monitor.sources.kafka import ensure_topics

        settings = kafka_settings(self.name)
        ensure_topics(settings, [self.name], partitions=1)
        return KafkaPublisher(settings)

    def read(self, want: int) -> list[tuple[bytes | None, bytes]]:
        """(key, value) of what the destination holds, in order."""
        if self.kind == "memory":
            lines = (self.tmp / "out" / f"{self.name}.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            return [(r["key"].encode() if r["key"] else None, json.dumps(r["value"]).encode()) for r in rows]
        from monitor.sources.kafka import KafkaSource

        source = KafkaSource(kafka_settings(self.name)).start()
        try:
            return [(m.key, m.value) for m in drain(source, want)]
        finally:
            source.close()


@pytest.fixture(params=BOTH)
def publishers(request, unique_name, tmp_path):
    return Publishers(request.param, unique_name, tmp_path)


def test_a_publisher_makes_what_it_flushed_readable_in_order(publishers) -> None:
    publisher = publishers.open()
    try:
        assert publisher.flush() == []  # nothing added: nothing to do
        values = [json.dumps({"id": f"x{i}", "n": i}).encode() for i in range(10)]
        for i, v in enumerate(values):
            publisher.add(Record(publishers.name, v, f"k{i % 3}".encode()))
        assert publisher.flush() == []
        got = publishers.read(10)
        assert [json.loads(v) for _, v in got] == [json.loads(v) for v in values]
        assert [k for k, _ in got] == [f"k{i % 3}".encode() for i in range(10)]
        assert publisher.flush() == []  # flushed records are not sent again
        assert len(publishers.read(10)) == 10
    finally:
        publisher.close()


# --- Alert outbox: written before delivery, a replayed opening changes nothing -------------------


def alert(status: str, key: str = "ticker:ACME", minutes: int = 0) -> AlertEvent:
    start = T0 + timedelta(minutes=minutes)
    return AlertEvent(
        id=f"{key}@{T0.isoformat()}", key=key, kind="negative_volume", status=status, severity="high",
        window_start=T0, window_end=start + timedelta(minutes=15), observed=9.0, baseline=1.5, score=1e-6,
        item_ids=("a", "b"), kinds=("negative_volume",),
    )  # fmt: skip


@pytest.fixture(params=BOTH)
def outbox(request, unique_name):
    yield from on_both(request, unique_name, MemoryOutbox, lambda c, s: ElasticsearchOutbox(c, s.index(ALERTS)))


def test_an_outbox_keeps_an_alert_pending_until_it_is_marked_sent(outbox) -> None:
    opened = outbox.record([alert("opened")], T0)
    assert [a.id for a in opened] == [alert("opened").id]
    assert outbox.record([alert("opened")], T0 + timedelta(minutes=1)) == []  # a replay: nothing new
    (pending,) = outbox.pending()
    assert pending.delivery == "pending" and pending.attempts == 0 and pending.headline_ids == ("a", "b")
    outbox.attempt(pending.id)
    outbox.attempt(pending.id, "Slack said no")  # a failure is recorded, not counted twice
    (pending,) = outbox.pending()
    assert pending.attempts == 1 and pending.last_error == "Slack said no"
    outbox.mark_sent(pending.id, "1700000000.000100")
    assert outbox.pending() == []
    assert outbox.followups() == []


def test_an_outbox_keeps_when_a_failed_post_may_be_tried_again(outbox) -> None:
    outbox.record([alert("opened")], T0)
    outbox.attempt(alert("opened").id)
    outbox.attempt(alert("opened").id, "HTTP 429: ratelimited", T0 + timedelta(seconds=30))
    (pending,) = outbox.pending()
    assert pending.next_attempt_at == T0 + timedelta(seconds=30) and pending.last_error == "HTTP 429: ratelimited"


def test_an_outbox_reports_an_episode_that_ended_after_its_message_was_sent(outbox) -> None:
    outbox.record([alert("opened")], T0)
    outbox.mark_sent(alert("opened").id, "1700000000.000100")
    outbox.record([alert("updated", minutes=15), alert("ended", minutes=30)], T0 + timedelta(minutes=45))
    (ended,) = outbox.followups()
    assert ended.status == "ended" and ended.slack_ts == "1700000000.000100" and ended.notified == "opened"
    assert ended.window_end == T0 + timedelta(minutes=45) and ended.created_at == T0
    outbox.mark_notified(ended.id, "ended", "high")
    assert outbox.followups() == []
    outbox.record([alert("ended", minutes=30)], T0 + timedelta(hours=1))  # a replay of the end: nothing new
    assert outbox.followups() == [] and outbox.pending() == []
    assert outbox.record([alert("updated", key="ticker:NEVER")], T0) == []  # an update of an unknown episode


def test_an_escalation_takes_its_figures_and_calls_for_a_follow_up(outbox) -> None:
    from dataclasses import replace

    outbox.record([alert("opened")], T0)
    outbox.mark_sent(alert("opened").id, "1700000000.000100")
    outbox.record([replace(alert("updated", minutes=15), severity="warning", observed=1.0)], T0)  # lower: figures kept
    assert outbox.followups() == []
    worse = replace(alert("updated", minutes=15), severity="critical", observed=30.0, baseline=2.0, score=0.9999,
                    item_ids=("c",), kinds=("negative_share", "negative_volume"), p_value=3e-12,
                    window_minutes=240.0, items=40.0, negatives=30.0)  # fmt: skip
    outbox.record([worse], T0 + timedelta(minutes=31))
    (up,) = outbox.followups()
    assert (up.severity, up.observed, up.baseline, up.headline_ids, up.p_value, up.items, up.negatives) == (
        "critical",
        30.0,
        2.0,
        ("c",),
        3e-12,
        40.0,
        30.0,
    )
    assert up.tests == ("negative_share", "negative_volume") and up.window_minutes == 240.0
    assert up.notified_severity == "high" and up.status == "updated" and up.delivery == "sent"
    outbox.mark_notified(up.id, up.status, up.severity)
    assert outbox.followups() == []


def test_an_outbox_parks_an_alert_slack_refused_for_good_and_never_offers_it_again(outbox) -> None:
    outbox.record([alert("opened")], T0)
    outbox.mark_failed(alert("opened").id, "Slack refused alert x: HTTP 200: invalid_blocks")
    assert outbox.pending() == [] and outbox.followups() == []
    outbox.record([alert("ended", minutes=30)], T0 + timedelta(minutes=45))  # its episode goes on being tracked
    assert outbox.pending() == [] and outbox.followups() == []


def test_an_outbox_keeps_an_analysts_verdict_and_refuses_one_on_an_unknown_alert(outbox) -> None:
    from monitor.errors import UnknownAlert

    outbox.record([alert("opened")], T0)
    outbox.judge(alert("opened").id, "false_alarm", "slack:ana", T0 + timedelta(hours=1))
    (judged,) = outbox.pending()
    assert (judged.feedback, judged.feedback_by, judged.feedback_at) == (
        "false_alarm", "slack:ana", T0 + timedelta(hours=1)
    )  # fmt: skip
    with pytest.raises(UnknownAlert):
        outbox.judge("ticker:NEVER@x", "false_alarm", "slack:ana", T0)


# --- Labels store: the last label wins, earlier ones are kept in the history ----------------------


@pytest.fixture(params=BOTH)
def labels(request, unique_name):
    yield from on_both(request, unique_name, MemoryLabels, lambda c, s: ElasticsearchLabels(c, s.index(LABELS)))


def test_a_labels_store_keeps_the_last_label_and_the_history(labels, tmp_path) -> None:
    first = Label("n1", "Acme cuts its outlook", "ana", T0, sentiment="bearish")
    again = Label("n1", "Acme cuts its outlook", "ana", T0 + timedelta(minutes=1), sentiment="bearish")
    fixed = Label("n1", "Acme cuts its outlook", "bo", T0 + timedelta(hours=1), sentiment="neutral")
    other = Label("n2", "Globex pays a dividend", "ana", T0, topic="Dividend")
    assert labels.put([first, other]) == 2
    labels.put([again])  # the same label again (a file imported twice): no new history
    labels.put([fixed])
    assert labels.since(T0 - timedelta(seconds=1)) == 2
    assert labels.since(T0 + timedelta(minutes=30)) == 1  # only the correction is newer
    files = labels.export(tmp_path / "export")
    sentiment = files["sentiment"].read_text().splitlines()
    assert sentiment[0] == "text,label" and sentiment[1:] == ["Acme cuts its outlook,neutral"]
    assert files["topic"].read_text().splitlines()[1:] == ["Globex pays a dividend,Dividend"]


# --- Detector snapshots: what was saved is what loads, whole ---------------------------------------


@pytest.fixture(params=BOTH)
def snapshots(request, unique_name):
    yield from on_both(
        request, unique_name, MemorySnapshots, lambda c, s: SnapshotStore(c, s.index(STATE), "detector:t")
    )


def test_a_snapshot_store_loads_the_last_snapshot_saved(snapshots) -> None:
    assert snapshots.load() is None
    first = {"offsets": {"0": 10}, "tracker": {"keys": {"all": [1, 2.5, None]}, "open": {}}}
    snapshots.save(first)
    assert snapshots.load() == first
    second = {"offsets": {"0": 25, "1": 3}, "tracker": {"keys": {}, "open": {"2026-11-02T12:00:00+00:00": []}}}
    snapshots.save(second)
    assert snapshots.load() == second


def test_an_unreachable_elasticsearch_is_store_unavailable_for_every_adapter() -> None:
    from monitor.elastic.client import connect
    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.elastic.outbox import ElasticsearchOutbox
    from monitor.elastic.snapshots import SnapshotStore
    from monitor.settings import ElasticsearchSettings

    client = connect(
        ElasticsearchSettings(url="http://127.0.0.1:9", request_timeout=2)
    )  # nothing listens on the discard port
    for attempt in (
        lambda: ElasticsearchOutbox(client, "x").pending(),
        lambda: ElasticsearchLabels(client, "x").since(T0),
        lambda: SnapshotStore(client, "x", "d").load(),
        lambda: SnapshotStore(client, "x", "d").save({}),
    ):
        with pytest.raises(StoreUnavailable, match="Elasticsearch .* failed: ConnectionError"):
            attempt()

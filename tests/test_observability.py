"""Every daemon's metrics: the process collectors, Prometheus names with units, and the detector's
and trainer's own figures (an operator alerts on a Slack outage, a stuck outbox, a failing trainer)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import generate_latest

from monitor.observability import DetectionMetrics, ScoringMetrics, TrainerMetrics


def value(registry, name: str, **labels) -> float:
    got = registry.get_sample_value(name, labels or None)
    assert got is not None, f"no sample {name}{labels}"
    return got


@pytest.mark.parametrize("metrics", [ScoringMetrics, DetectionMetrics, TrainerMetrics])
def test_each_daemon_exposes_process_metrics_and_conventional_names(metrics) -> None:
    registry = metrics().registry
    text = generate_latest(registry).decode()
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert "python_gc_objects_collected_total" in text and "python_info" in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE bearwatch_")}
    assert names, "no bearwatch metric"
    for line in text.splitlines():
        if line.startswith("# TYPE bearwatch_"):
            _, _, name, kind = line.split()
            if kind == "counter":
                assert name.endswith("_total")  # counters are exposed with _total
            if kind == "gauge" and "timestamp" in name:
                assert name.endswith("_timestamp_seconds")


def test_the_consumer_lag_is_in_messages_by_partition() -> None:
    m = ScoringMetrics()
    m.lag.labels(topic="bearwatch.news", partition="2").set(17)
    assert value(m.registry, "bearwatch_consumer_lag_messages", topic="bearwatch.news", partition="2") == 17


def test_the_detector_counts_records_alerts_and_slack_outcomes(monkeypatch) -> None:
    import monitor.detection.stage
    from drills.slack_server import FakeSlack
    from monitor.alerting.outbox import MemoryOutbox, deliver_pending
    from monitor.alerting.slack import SlackDelivery, SlackSettings
    from monitor.detection.stage import DetectionStage
    from monitor.detection.tracker import NewsTracker
    from monitor.settings import Secret
    from monitor.sinks.base import Record
    from monitor.sources.memory import MemoryTopic
    from tests.test_detection_tracker import stream

    topic = MemoryTopic("scored")
    events = stream()
    for e in events:
        topic.append(Record("scored", json.dumps(e.to_json()).encode(), None))
    topic.append(Record("scored", b"{not json", None))  # a bad record: skipped and counted
    slack = FakeSlack()
    try:
        slack.server_error(1)  # the first post fails: one retry counted, the alert stays pending
        channel = SlackDelivery(SlackSettings(token=Secret("xoxb-test"), channel="C1", base_url=slack.base_url))
        outbox = MemoryOutbox()
        metrics = DetectionMetrics()
        monkeypatch.setattr(monitor.detection.stage, "DELIVERY_GRACE_S", 0.0)  # no retry before the idle exit
        stage = DetectionStage(
            topic, NewsTracker(), outbox, deliver=lambda: deliver_pending(outbox, channel, lambda ids: []),
            metrics=metrics,
        )  # fmt: skip
        stage.run(idle_timeout_s=0.05)
        first = len(slack.messages)
    finally:
        slack.close()
    r = metrics.registry
    assert value(r, "bearwatch_detector_records_total") == len(events) + 1
    assert value(r, "bearwatch_detector_skipped_records_total") == 1
    opened = sum(
        sample.value
        for family in r.collect()
        if family.name == "bearwatch_alert_events"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["status"] == "opened"
    )
    assert opened == len([a for a in stage.stats.alerts if a.status == "opened"]) >= 1
    assert value(r, "bearwatch_slack_attempts_total", outcome="retry") == 1  # the failed post, not retried in place
    assert value(r, "bearwatch_alerts_pending") == len(outbox.pending()) >= 1

    def posted() -> float:  # alerts and follow-ups (thread replies)
        return sum(value(r, "bearwatch_slack_attempts_total", outcome=o) for o in ("sent", "followup"))

    assert posted() == first
    slack = FakeSlack()
    try:  # a later pass, once the back-off has passed, delivers it
        channel.client.base_url = slack.base_url
        later = datetime.now(timezone.utc) + timedelta(minutes=5)
        stage.deliver = lambda: deliver_pending(outbox, channel, lambda ids: [], now=later)
        stage.run(idle_timeout_s=0.05)
    finally:
        slack.close()
    assert posted() == first + len(slack.messages)
    assert len(slack.messages) >= 1
    assert value(r, "bearwatch_alerts_pending") == len(outbox.pending()) == 0
    assert value(r, "bearwatch_slack_last_success_timestamp_seconds") > 0
    assert value(r, "bearwatch_detector_lag_messages") == 0
    assert value(r, "bearwatch_detector_watermark_timestamp_seconds") >= events[-1].published_at.timestamp() - 3600


def test_the_trainer_records_each_cycle_by_outcome() -> None:
    m = TrainerMetrics()
    m.cycle("skipped", 0.5, "v1")
    m.cycle("promoted", 120.0, "v2")
    assert value(m.registry, "bearwatch_trainer_cycles_total", outcome="promoted") == 1
    assert value(m.registry, "bearwatch_trainer_last_cycle_duration_seconds") == 120.0
    assert value(m.registry, "bearwatch_trainer_current_model_info", version="v2") == 1
    assert m.registry.get_sample_value("bearwatch_trainer_current_model_info", {"version": "v1"}) is None
    assert value(m.registry, "bearwatch_trainer_last_cycle_timestamp_seconds", outcome="skipped") > 0


def test_an_idle_exit_waits_out_the_back_off_and_delivers_what_slack_refused_once() -> None:
    from drills.slack_server import FakeSlack
    from monitor.alerting.outbox import MemoryOutbox, deliver_pending
    from monitor.alerting.slack import SlackDelivery, SlackSettings
    from monitor.detection.stage import DetectionStage
    from monitor.detection.tracker import NewsTracker
    from monitor.settings import Secret
    from monitor.sinks.base import Record
    from monitor.sources.memory import MemoryTopic
    from tests.test_detection_tracker import stream

    topic = MemoryTopic("scored")
    for e in stream():
        topic.append(Record("scored", json.dumps(e.to_json()).encode(), None))
    slack = FakeSlack()
    try:
        slack.server_error(1)
        channel = SlackDelivery(SlackSettings(token=Secret("xoxb-test"), channel="C1", base_url=slack.base_url))
        outbox = MemoryOutbox()
        deliver = lambda: deliver_pending(outbox, channel, lambda ids: [])  # noqa: E731
        stage = DetectionStage(topic, NewsTracker(), outbox, deliver=deliver)
        stage.run(idle_timeout_s=0.05)
        assert outbox.docs and not outbox.pending()  # tried again after its 2 s back-off, before the exit
        assert all(a.delivery == "sent" and a.attempts >= 1 for a in outbox.docs.values())
        assert len(slack.messages) >= len(outbox.docs)
    finally:
        slack.close()

"""Monitor → detection → Slack on the real Kafka and Elasticsearch, with a local Slack-like server:
the bundled stream's planted episode gives exactly one alert document and one Slack message per
key, through rate limits and server errors, across restarts and a crash after posting."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.slack_server import FakeSlack
from monitor.resources import shipped_model
from monitor.settings import load_settings

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


@pytest.fixture
def settings(unique_name: str, kafka_bootstrap: str, slack, es_client):
    from monitor.indices import mappings
    from tests.conftest import service_env

    env = service_env(
        unique_name,
        kafka_bootstrap,
        BEARWATCH_MODEL_PATH=str(shipped_model()),
        BEARWATCH_SLACK_TOKEN="xoxb-test",
        BEARWATCH_SLACK_CHANNEL="C123",
        BEARWATCH_SLACK_BASE_URL=slack.base_url,
        BEARWATCH_DETECTION_BATCH_SIZE="50",
        BEARWATCH_DETECTION_SNAPSHOT_EVERY_BATCHES="2",
        # One news partition: items reach detection in publication order, as they do when the scorer
        # keeps up in real time (a multi-partition backlog is drained unevenly: see the README).
        BEARWATCH_KAFKA_PARTITIONS="1",
    )
    s = load_settings(env=env)
    score_demo_stream(s)
    yield s
    for name in mappings():
        es_client.indices.delete(index=f"{unique_name}-{name}", ignore_unavailable=True)


def score_demo_stream(settings) -> None:
    from bearwatch.daemon import build_kafka_app, produce_file
    from monitor.resources import demo_stream

    produce_file(settings, str(demo_stream()), rate=None)
    app = build_kafka_app(settings)
    stats = app.run(idle_timeout_s=3)
    app.source.close()
    app.publisher.close()
    assert stats.scored > 300


def alert_docs(es_client, settings) -> list[dict]:
    index = settings.elasticsearch.index("alerts")
    es_client.indices.refresh(index=index)
    return [h["_source"] for h in es_client.search(index=index, size=100)["hits"]["hits"]]


def run_detection(settings, **run):
    from bearwatch.daemon import build_detection_stage

    stage = build_detection_stage(settings)
    stats = stage.run(**run)
    stage.source.close()
    return stage, stats


def hlcy_messages(slack) -> list[dict]:
    return [m for m in slack.posts if "ticker:HLCY" in str(m.get("blocks"))]


def test_planted_episode_gives_one_alert_document_and_one_slack_message(settings, slack, es_client) -> None:
    run_detection(settings, idle_timeout_s=3)
    docs = alert_docs(es_client, settings)
    hlcy = [d for d in docs if d["key"] == "ticker:HLCY"]
    assert len(hlcy) == 1 and hlcy[0]["delivery"] == "sent" and hlcy[0]["slack_ts"]
    assert len(hlcy_messages(slack)) == 1
    assert len(slack.posts) == len(docs)  # every alert once, nothing else
    assert all(d["delivery"] == "sent" for d in docs)
    assert hlcy[0]["status"] == "ended" and hlcy[0]["notified"] == "ended" and not hlcy[0]["followup"]
    message = hlcy_messages(slack)[0]
    assert message.get("edited") and "ended" in message["text"]  # the same message now says the episode ended
    thread = [r for r in slack.replies if r["thread_ts"] == message["ts"]]
    assert thread and "Ended" in thread[-1]["text"]  # and a reply in its thread says so
    ended = [d for d in docs if d["status"] == "ended"]
    assert len(slack.replies) >= len(ended)  # every end (and escalation) replied, each once (checked in drills)


def test_rate_limits_and_server_errors_still_deliver_exactly_once(settings, slack, es_client) -> None:
    slack.rate_limit(2, retry_after=1)
    slack.server_error(2)
    run_detection(settings, idle_timeout_s=3)
    docs = alert_docs(es_client, settings)
    assert len(hlcy_messages(slack)) == 1 and len(slack.posts) == len(docs)
    assert slack.script == []  # every scripted failure was met (by a post, or the duplicate check before a re-post)
    calls = slack.requests.count("/api/chat.postMessage") + slack.requests.count("/api/conversations.history")
    assert calls >= len(docs) + len(slack.replies) + 4


def test_restart_mid_episode_does_not_alert_again(settings, slack, es_client) -> None:
    first, stats = run_detection(settings, max_batches=5)  # stops inside the breach episode
    assert stats.events == 250
    second, _ = run_detection(settings, idle_timeout_s=3)
    docs = alert_docs(es_client, settings)
    assert len([d for d in docs if d["key"] == "ticker:HLCY"]) == 1
    assert len(hlcy_messages(slack)) == 1 and len(slack.posts) == len(docs)


def test_crash_after_posting_before_recording_does_not_post_twice(settings, slack, es_client, monkeypatch) -> None:
    from monitor.detection.stage import DetectionStage
    from monitor.elastic.outbox import ElasticsearchOutbox
    from monitor.errors import StoreUnavailable

    real_mark_sent = ElasticsearchOutbox.mark_sent

    def crash_before_recording(self, alert_id, ts):  # fault injection: the process dies after Slack took it
        raise StoreUnavailable("Elasticsearch alert sent failed: ConnectionError (injected)")

    monkeypatch.setattr(ElasticsearchOutbox, "mark_sent", crash_before_recording)
    monkeypatch.setattr(DetectionStage, "_save_snapshot", lambda self: None)  # and no snapshot survives
    run_detection(settings, idle_timeout_s=3)
    posted = len(slack.posts)
    assert posted >= 1 and all(d["delivery"] == "pending" for d in alert_docs(es_client, settings))

    monkeypatch.setattr(ElasticsearchOutbox, "mark_sent", real_mark_sent)
    monkeypatch.undo()
    first_ids = [m["metadata"]["event_payload"]["alert_id"] for m in slack.posts]
    run_detection(settings, idle_timeout_s=3)  # replays the whole topic from scratch
    docs = alert_docs(es_client, settings)
    ids = [m["metadata"]["event_payload"]["alert_id"] for m in slack.posts]
    assert sorted(ids) == sorted(d["id"] for d in docs)  # every alert exactly once
    assert ids[:posted] == first_ids  # what reached Slack before the crash was found there, not posted again
    assert all(d["delivery"] == "sent" for d in docs)

"""Analysts answer alerts from Slack: signed requests to the detector's HTTP server, sent as Slack
sends them (tests/../drills/slack_server.py), land in the labels store and on the alert."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from drills.slack_server import block_actions, interact
from monitor.alerting.feedback import FALSE_ALARM, WRONG_SENTIMENT, Feedback
from monitor.alerting.message import Headline, alert_blocks
from monitor.alerting.outbox import MemoryOutbox
from monitor.labels_store import MemoryLabels
from monitor.observability import Health, serve
from monitor.records import AlertEvent
from monitor.settings import Secret

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
T0 = datetime(2026, 11, 3, 6, 0, tzinfo=timezone.utc)
EVENT = AlertEvent(
    "ticker:MSFT|x", "ticker:MSFT", "negative_volume", "opened", "high", T0, T0 + timedelta(minutes=15), 7.0, 0.3,
    0.99999, ("n1", "n2"), ("negative_volume",), p_value=2e-6, window_minutes=240.0, items=9.0, negatives=7.0,
)  # fmt: skip
HEADLINES = {"n1": "Microsoft cloud growth slows, shares slide", "n2": "Analyst cuts Microsoft target"}


@pytest.fixture
def endpoint():
    from prometheus_client import CollectorRegistry

    outbox, labels = MemoryOutbox(), MemoryLabels()
    outbox.record([EVENT], T0)
    feedback = Feedback(
        Secret(SECRET), labels.put, lambda ids: {i: HEADLINES[i] for i in ids if i in HEADLINES}, outbox.judge
    )
    server = serve("127.0.0.1", 0, CollectorRegistry(), Health(), {"/slack/actions": feedback.handle})
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/actions", outbox, labels
    server.shutdown()


def test_wrong_sentiment_writes_a_label_by_the_analyst(endpoint) -> None:
    url, outbox, labels = endpoint
    choice = {"action_id": WRONG_SENTIMENT, "type": "static_select", "selected_option": {"value": "n2|neutral"}}
    assert interact(url, block_actions("ana", choice), SECRET) == (200, "")
    doc = labels.docs["n2"]
    assert doc["sentiment"] == "neutral" and doc["labelled_by"] == "slack:ana" and doc["text"] == HEADLINES["n2"]
    assert outbox.docs[EVENT.id].feedback is None  # a label, not a verdict on the alert


def test_false_alarm_is_kept_on_the_alert(endpoint) -> None:
    url, outbox, labels = endpoint
    click = {"action_id": FALSE_ALARM, "type": "button", "value": EVENT.id}
    assert interact(url, block_actions("ben", click), SECRET)[0] == 200
    alert = outbox.docs[EVENT.id]
    assert (alert.feedback, alert.feedback_by) == ("false_alarm", "slack:ben") and alert.feedback_at is not None
    assert labels.docs == {}


@pytest.mark.parametrize(
    ("send", "status"),
    [
        (lambda url, p: interact(url, p, SECRET, signed_with="not-the-secret"), 401),  # forged
        (lambda url, p: interact(url, p, SECRET, timestamp=int(time.time()) - 600), 401),  # replayed
    ],
    ids=["forged", "replayed"],
)
def test_unsigned_or_stale_requests_change_nothing(endpoint, send, status) -> None:
    url, outbox, labels = endpoint
    click = {"action_id": FALSE_ALARM, "type": "button", "value": EVENT.id}
    assert send(url, block_actions("eve", click))[0] == status
    assert outbox.docs[EVENT.id].feedback is None and labels.docs == {}


@pytest.mark.parametrize(
    "action",
    [
        {"action_id": FALSE_ALARM, "type": "button", "value": "ticker:NOPE|x"},  # an alert not held
        {"action_id": WRONG_SENTIMENT, "type": "static_select", "selected_option": {"value": "n1|bearish"}},
        {"action_id": WRONG_SENTIMENT, "type": "static_select", "selected_option": {"value": "gone|neutral"}},
        {"action_id": "something_else", "type": "button", "value": "x"},
    ],
    ids=["unknown-alert", "not-a-correction", "unknown-item", "unknown-action"],
)
def test_signed_answers_bearwatch_cannot_take_are_refused_with_a_reason(endpoint, action) -> None:
    url, outbox, labels = endpoint
    status, reason = interact(url, block_actions("ana", action), SECRET)
    assert status == 400 and reason
    assert outbox.docs[EVENT.id].feedback is None and labels.docs == {}


def test_the_alert_carries_the_controls_within_slacks_limits() -> None:
    from drills.slack_server import blocks_invalid
    from monitor.records import Alert

    headlines = [Headline("x" * 300, None, "2026-11-03T06:01:00Z", 0.97, None, f"n{i}") for i in range(5)]
    _, blocks = alert_blocks(Alert.opened(EVENT, T0), headlines, "http://kibana:5601", answers=True)
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    kinds = [e.get("action_id") for e in actions["elements"]]
    assert kinds == [None, FALSE_ALARM, WRONG_SENTIMENT]  # Kibana, then the two answers
    menu = actions["elements"][2]
    assert len(menu["options"]) == 10 and all(len(o["text"]["text"]) <= 75 for o in menu["options"])
    assert {o["value"] for o in menu["options"]} >= {"n0|neutral", "n4|bullish"}
    assert not blocks_invalid(blocks)
    _, plain = alert_blocks(Alert.opened(EVENT, T0), headlines, "http://kibana:5601")
    assert all(e.get("action_id") is None for b in plain if b["type"] == "actions" for e in b["elements"])


@pytest.mark.parametrize(
    ("length", "status"), [("abc", 400), ("-5", 400), (str(2 << 20), 413)], ids=["not-a-number", "negative", "huge"]
)
def test_a_request_with_a_bad_length_is_answered_and_changes_nothing(endpoint, length, status) -> None:
    import http.client
    from urllib.parse import urlsplit

    url, outbox, labels = endpoint
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.putrequest("POST", parts.path)
        conn.putheader("Content-Length", length)
        conn.endheaders()
        assert conn.getresponse().status == status
    finally:
        conn.close()
    assert outbox.docs[EVENT.id].feedback is None and labels.docs == {}

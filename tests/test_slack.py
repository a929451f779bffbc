"""Slack delivery against a local server that answers as Slack does."""

from __future__ import annotations

import pytest

from drills.slack_server import FakeSlack
from monitor.alerting.message import Headline, alert_blocks, escape
from monitor.alerting.slack import SlackDelivery, SlackSettings
from monitor.errors import DeliveryFailed
from monitor.records import Alert
from monitor.settings import Secret

ALERT = Alert.from_json(
    {
        "id": "ticker:HLCY|negative_volume|2026-11-03T06:00:00+00:00",
        "key": "ticker:HLCY",
        "kind": "negative_volume",
        "status": "opened",
        "severity": "high",
        "observed": 9,
        "baseline": 1.2,
        "score": 1e-5,
        "window_start": "2026-11-03T06:00:00Z",
        "window_end": "2026-11-03T06:15:00Z",
        "created_at": "2026-11-03T06:16:00Z",
        "updated_at": "2026-11-03T06:16:00Z",
    }
)


@pytest.fixture
def slack():
    fake = FakeSlack()
    yield fake
    fake.close()


def delivery(fake: FakeSlack, sleeps: list | None = None, **kw) -> SlackDelivery:
    settings = SlackSettings(token=Secret("xoxb-test"), channel="C123", base_url=fake.base_url, **kw)
    return SlackDelivery(settings, sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_posts_block_kit_with_the_alert_id_in_metadata(slack) -> None:
    text, blocks = alert_blocks(
        ALERT,
        [Headline("Halcyon breach widens", "https://news.example/1", "2026-11-03T06:01:00Z", 0.98)],
        "http://kibana:5601",
    )
    ts = delivery(slack).post(ALERT.id, text, blocks)
    assert len(slack.messages) == 1 and slack.messages[0]["ts"] == ts
    posted = slack.messages[0]
    assert posted["metadata"]["event_payload"]["alert_id"] == ALERT.id
    assert any(b["type"] == "actions" for b in posted["blocks"])
    assert "<https://news.example/1|Halcyon breach widens>" in str(posted["blocks"])


def test_rate_limit_is_retried_honouring_retry_after(slack) -> None:
    slack.rate_limit(2, retry_after=3)
    sleeps: list = []
    delivery(slack, sleeps).post(ALERT.id, *alert_blocks(ALERT, []))
    assert sleeps == [3.0, 3.0] and len(slack.messages) == 1


def test_server_errors_are_retried_then_delivered_once(slack) -> None:
    slack.server_error(2)
    delivery(slack).post(ALERT.id, *alert_blocks(ALERT, []))
    assert len(slack.messages) == 1


def test_persistent_failure_raises_and_posts_nothing(slack) -> None:
    slack.server_error(10)
    with pytest.raises(DeliveryFailed, match="HTTP 500"):
        delivery(slack, attempts=3).post(ALERT.id, *alert_blocks(ALERT, []))
    assert slack.messages == []


def test_permanent_error_is_not_retried(slack) -> None:
    bad = SlackDelivery(
        SlackSettings(token=Secret("xoxb-wrong"), channel="C123", base_url=slack.base_url), sleep=lambda s: None
    )
    with pytest.raises(DeliveryFailed, match="invalid_auth") as refused:
        bad.post(ALERT.id, *alert_blocks(ALERT, []))
    assert slack.requests.count("/api/chat.postMessage") == 1
    assert not refused.value.permanent  # a token to fix: the alert waits for it, it is not parked


def test_long_headlines_with_long_links_fit_slacks_limits_and_are_delivered(slack) -> None:
    long = [  # five 300-character headlines full of characters that escaping lengthens, 1,900-char links
        Headline("&<>" * 100, "https://news.example/" + "a" * 1900 + str(i), "2026-11-03T06:01:00Z", 0.9)
        for i in range(5)
    ]
    text, blocks = alert_blocks(ALERT, long, "http://kibana:5601")
    assert all(len((b.get("text") or {}).get("text", "")) <= 3000 for b in blocks)
    assert blocks[2]["text"]["text"].count("\n• ") == 5  # every headline kept, some without their link
    delivery(slack).post(ALERT.id, text, blocks)  # the local server refuses what Slack would refuse
    assert len(slack.messages) == 1


def test_a_message_slack_refuses_is_parked_as_failed_and_never_posted_again(slack) -> None:
    from datetime import datetime, timezone

    from monitor.alerting.outbox import MemoryOutbox, deliver_pending
    from monitor.records import AlertEvent

    outbox = MemoryOutbox()
    when = datetime(2026, 11, 3, 6, 16, tzinfo=timezone.utc)
    event = AlertEvent(
        id=ALERT.id, key=ALERT.key, kind=ALERT.kind, status="opened", severity="high", window_start=when,
        window_end=when, observed=9.0, baseline=1.2, score=1e-5, item_ids=(), kinds=(ALERT.kind,),
    )  # fmt: skip
    outbox.record([event], when)
    slack.not_ok(1, error="invalid_blocks")
    d = delivery(slack)
    assert deliver_pending(outbox, d.post, lambda ids: [], d.already_posted) == (0, 1)
    assert outbox.docs[ALERT.id].delivery == "failed" and "invalid_blocks" in outbox.docs[ALERT.id].last_error
    assert deliver_pending(outbox, d.post, lambda ids: [], d.already_posted) == (0, 0)  # not offered again
    assert slack.requests.count("/api/chat.postMessage") == 1 and slack.messages == []


def test_an_alert_already_in_the_channel_is_found_by_its_id(slack) -> None:
    d = delivery(slack)
    ts = d.post(ALERT.id, *alert_blocks(ALERT, []))
    assert d.already_posted(ALERT.id, 0) == ts
    assert d.already_posted("another-alert", 0) is None


def test_webhook_mode_with_rate_limit(slack) -> None:
    slack.rate_limit(1, retry_after=2)
    sleeps: list = []
    d = SlackDelivery(SlackSettings(webhook_url=Secret(slack.webhook_url)), sleep=sleeps.append)
    assert d.post(ALERT.id, *alert_blocks(ALERT, [])) == "webhook"
    assert sleeps == [2.0] and len(slack.messages) == 1


def test_headlines_cannot_inject_mentions_or_links() -> None:
    hostile = Headline(
        "<!channel> ACME <http://evil.example|click> & <@U123>", "javascript:alert(1)", "2026-11-03T06:01:00Z", 0.9
    )
    _, blocks = alert_blocks(ALERT, [hostile])
    text = str(blocks)
    assert "<!channel>" not in text and "<http://evil.example|click>" not in text and "<@U123>" not in text
    assert escape("<!channel>") in text and "javascript:" not in text


def test_ended_episode_edits_the_posted_message(slack) -> None:
    from datetime import datetime, timedelta, timezone

    from monitor.alerting.outbox import MemoryOutbox, deliver_pending
    from monitor.records import AlertEvent

    d = delivery(slack)
    outbox = MemoryOutbox()
    t0 = datetime(2026, 11, 3, 6, 0, tzinfo=timezone.utc)
    opened = AlertEvent(
        "ticker:HLCY|x",
        "ticker:HLCY",
        "negative_volume",
        "opened",
        "high",
        t0,
        t0 + timedelta(minutes=15),
        9,
        1.2,
        0.999,
        (),
    )
    outbox.record([opened], t0)
    assert deliver_pending(outbox, d.post, lambda ids: [], d.already_posted, update=d.update) == (1, 0)
    outbox.record([AlertEvent(**{**opened.__dict__, "status": "ended", "window_end": t0 + timedelta(hours=3)})], t0)
    deliver_pending(outbox, d.post, lambda ids: [], d.already_posted, update=d.update)
    assert len(slack.messages) == 1 and slack.messages[0]["edited"] and "ended" in slack.messages[0]["text"]
    deliver_pending(outbox, d.post, lambda ids: [], d.already_posted, update=d.update)
    assert slack.requests.count("/api/chat.update") == 1  # edited once, not at every cycle


def test_a_timeout_in_the_duplicate_check_or_an_edit_is_a_delivery_failure_not_a_crash(slack) -> None:
    from monitor.errors import DeliveryFailed

    d = delivery(slack, timeout_s=1)
    slack.hang(1, seconds=2)
    with pytest.raises(DeliveryFailed, match="conversations.history failed: .*timed out"):
        d.already_posted(ALERT.id, 0)
    slack.hang(1, seconds=2)
    with pytest.raises(DeliveryFailed, match="chat.update failed: .*timed out"):
        d.update("123.456", "x", [])
    assert d.post(ALERT.id, "x", []) and len(slack.messages) == 1  # and service resumes

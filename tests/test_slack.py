"""Slack delivery against a local server that answers as Slack does."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from drills.slack_server import FakeSlack
from monitor.alerting.message import Headline, alert_blocks, escape
from monitor.alerting.slack import SlackDelivery, SlackSettings
from monitor.errors import DeliveryFailed
from monitor.records import Alert
from monitor.settings import Secret

T0 = datetime(2026, 11, 3, 6, 0, tzinfo=timezone.utc)

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


def outbox_with(*events):
    from monitor.alerting.outbox import MemoryOutbox

    outbox = MemoryOutbox()
    outbox.record(list(events), T0)
    return outbox


def event(status: str = "opened", key: str = "ticker:HLCY", **kw):
    from monitor.records import AlertEvent

    fields = dict(
        id=f"{key}|{T0.isoformat()}", key=key, kind="negative_volume", status=status, severity="high",
        window_start=T0, window_end=T0 + timedelta(minutes=15), observed=7.0, baseline=0.3, score=0.99999,
        item_ids=(), kinds=("negative_volume",), p_value=2.1e-6, window_minutes=240.0, items=9.0, negatives=7.0,
    )  # fmt: skip
    return AlertEvent(**{**fields, **kw})


def test_a_rate_limit_is_one_attempt_and_the_outbox_waits_for_retry_after(slack) -> None:
    from monitor.alerting.outbox import deliver_pending

    slack.rate_limit(1, retry_after=3)
    d, outbox = delivery(slack), outbox_with(event(), event(key="ticker:ACME"), event(key="ticker:BRKX"))
    first = deliver_pending(outbox, d, lambda ids: [], now=T0)
    # one request, then the pass ends: the other two would be refused too, and nothing slept
    assert (first.sent, first.retried, first.waiting) == (0, 1, 2)
    assert slack.requests.count("/api/chat.postMessage") == 1
    limited = next(a for a in outbox.pending() if a.last_error)
    assert limited.next_attempt_at == T0 + timedelta(seconds=3) and "429" in limited.last_error
    assert deliver_pending(outbox, d, lambda ids: [], now=T0 + timedelta(seconds=1)).sent == 2  # the others
    assert deliver_pending(outbox, d, lambda ids: [], now=T0 + timedelta(seconds=2)).sent == 0  # not yet due
    assert deliver_pending(outbox, d, lambda ids: [], now=T0 + timedelta(seconds=3)).sent == 1
    assert len(slack.messages) == 3 and len({m["metadata"]["event_payload"]["alert_id"] for m in slack.messages}) == 3


def test_server_errors_back_off_across_passes_then_deliver_once(slack) -> None:
    from monitor.alerting.outbox import backoff, deliver_pending

    slack.server_error(2)
    d, outbox = delivery(slack), outbox_with(event())
    now = T0
    for expected_wait in (2, 4):  # each failed pass doubles the wait: 2 s, 4 s (at most 60 s)
        assert deliver_pending(outbox, d, lambda ids: [], now=now).sent == 0
        (pending,) = outbox.pending()
        assert pending.next_attempt_at == now + timedelta(seconds=expected_wait) and pending.last_error
        now = pending.next_attempt_at
    # the alert may have reached Slack during a failed attempt: the channel is checked, then it is posted
    assert deliver_pending(outbox, d, lambda ids: [], now=now).sent == 1
    assert len(slack.messages) == 1 and slack.requests.count("/api/conversations.history") == 2
    assert backoff(10) == timedelta(seconds=60) and backoff(1, retry_after=120) == timedelta(seconds=120)


def test_a_slack_outage_costs_one_request_per_alert_per_pass_never_a_sleep(slack) -> None:
    from monitor.alerting.outbox import deliver_pending

    slack.server_error(10)
    d, outbox = delivery(slack), outbox_with(event(), event(key="ticker:ACME"))
    d.sleep = lambda s: pytest.fail("the detection loop must not sleep in Slack delivery")
    result = deliver_pending(outbox, d, lambda ids: [], now=T0)
    assert (result.sent, result.retried, result.pending) == (0, 2, 2)
    assert slack.requests.count("/api/chat.postMessage") == 2
    with pytest.raises(DeliveryFailed, match="HTTP 500"):
        d.post(ALERT.id, *alert_blocks(ALERT, []))
    assert slack.messages == []


def test_post_retrying_honours_retry_after_for_the_trainers_notices(slack) -> None:
    slack.rate_limit(2, retry_after=3)
    sleeps: list = []
    delivery(slack, sleeps).post_retrying("model-v2-promoted", *alert_blocks(ALERT, []))
    assert sleeps == [3.0, 3.0] and len(slack.messages) == 1


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

    from monitor.alerting.outbox import Delivered, MemoryOutbox, deliver_pending
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
    assert deliver_pending(outbox, d, lambda ids: []).failed == 1
    assert outbox.docs[ALERT.id].delivery == "failed" and "invalid_blocks" in outbox.docs[ALERT.id].last_error
    assert deliver_pending(outbox, d, lambda ids: []) == Delivered()  # not offered again
    assert slack.requests.count("/api/chat.postMessage") == 1 and slack.messages == []


def test_an_alert_already_in_the_channel_is_found_by_its_id(slack) -> None:
    d = delivery(slack)
    ts = d.post(ALERT.id, *alert_blocks(ALERT, []))
    assert d.already_posted(ALERT.id, 0) == ts
    assert d.already_posted("another-alert", 0) is None


def test_webhook_mode_with_rate_limit(slack) -> None:
    slack.rate_limit(1, retry_after=2)
    d = SlackDelivery(SlackSettings(webhook_url=Secret(slack.webhook_url)))
    with pytest.raises(DeliveryFailed, match="429") as limited:
        d.post(ALERT.id, *alert_blocks(ALERT, []))
    assert limited.value.retry_after == 2.0 and not limited.value.permanent
    assert d.post(ALERT.id, *alert_blocks(ALERT, [])) == "webhook" and len(slack.messages) == 1


def test_headlines_cannot_inject_mentions_or_links() -> None:
    hostile = Headline(
        "<!channel> ACME <http://evil.example|click> & <@U123>", "javascript:alert(1)", "2026-11-03T06:01:00Z", 0.9
    )
    _, blocks = alert_blocks(ALERT, [hostile])
    text = str(blocks)
    assert "<!channel>" not in text and "<http://evil.example|click>" not in text and "<@U123>" not in text
    assert escape("<!channel>") in text and "javascript:" not in text


def test_an_escalation_and_the_end_are_thread_replies_and_the_message_shows_its_current_state(slack) -> None:
    from monitor.alerting.outbox import deliver_pending

    d, outbox = delivery(slack), outbox_with(event())
    assert deliver_pending(outbox, d, lambda ids: [], now=T0).sent == 1
    (top,) = slack.messages
    outbox.record([event("updated", severity="critical", observed=30.0, items=40.0, negatives=30.0)], T0)
    assert deliver_pending(outbox, d, lambda ids: [], now=T0).followups == 1
    reply = slack.messages[-1]
    assert reply["thread_ts"] == top["ts"] and "Escalated to critical" in str(reply["blocks"])
    assert "30 of 40 items negative" in str(reply["blocks"])
    assert top["edited"] and "*Severity:* critical" in str(top["blocks"])  # the message, brought up to date
    outbox.record([event("ended", window_end=T0 + timedelta(hours=3))], T0)
    assert deliver_pending(outbox, d, lambda ids: [], now=T0).followups == 1
    assert slack.messages[-1]["thread_ts"] == top["ts"] and "Ended" in slack.messages[-1]["text"]
    assert "ended" in top["text"] and "after 3 h" in str(top["blocks"])
    assert deliver_pending(outbox, d, lambda ids: [], now=T0).followups == 0  # once, not at every pass
    assert slack.requests.count("/api/chat.update") == 2 and len(slack.messages) == 3
    assert d.already_posted(event().id, 0) == top["ts"]  # the replies are never taken for the alert itself


def test_with_a_webhook_follow_ups_are_new_messages(slack) -> None:
    from monitor.alerting.outbox import deliver_pending

    d, outbox = SlackDelivery(SlackSettings(webhook_url=Secret(slack.webhook_url))), outbox_with(event())
    deliver_pending(outbox, d, lambda ids: [], now=T0)
    outbox.record([event("ended", window_end=T0 + timedelta(hours=1))], T0)
    assert deliver_pending(outbox, d, lambda ids: [], now=T0).followups == 1
    assert len(slack.messages) == 2 and "Ended" in slack.messages[1]["text"]


def test_the_message_says_how_many_of_how_many_which_test_when_and_which_model() -> None:
    from monitor.records import Alert

    alert = Alert.opened(event(), T0)
    text, blocks = alert_blocks(
        alert, [Headline("Halcyon breach widens", None, "2026-11-03T06:01:00Z", 0.98, "v20261101-0300")]
    )
    facts = blocks[1]["text"]["text"]
    assert "7 of 9 items negative in 4 h vs 0.3 negative expected" in facts
    assert "negative count (Poisson tail" in facts and "p = 2.1e-06" in facts
    start = int(T0.timestamp())
    assert f"<!date^{start}^{{date_short_pretty}} {{time}}|2026-11-03 06:00 UTC>" in facts  # the reader's zone
    assert "the model's probability that each is bearish" in blocks[2]["text"]["text"]
    assert "scored by model v20261101-0300" in blocks[-1]["elements"][0]["text"]
    share = Alert.opened(event(kind="negative_share", observed=1.0, baseline=0.25, items=6.0, negatives=6.0), T0)
    assert "6 of 6 items negative (100%) in 4 h vs 25% usually" in alert_blocks(share, [])[1][1]["text"]["text"]


def test_the_kibana_link_has_utc_times_with_z_and_keeps_a_space_in_the_base() -> None:
    from monitor.alerting.message import kibana_link

    link = kibana_link("https://kibana.example/s/desk", "ticker:MSFT", T0, T0 + timedelta(hours=4))
    assert link is not None and link.startswith("https://kibana.example/s/desk/app/dashboards#/view/")
    assert "from:'2026-11-03T06:00:00.000Z',to:'2026-11-03T10:00:00.000Z'" in link and "+" not in link


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


def test_every_message_passes_slack_sdks_own_block_kit_checks() -> None:
    """slack_sdk's block models know Slack's limits (text lengths, element counts, option texts)."""
    from slack_sdk.models.blocks import Block

    from monitor.alerting.message import followup_blocks
    from monitor.records import Alert

    long = [
        Headline("&<>" * 100, "https://news.example/" + "a" * 1900 + str(i), "t", 0.9, "v1", f"n{i}") for i in range(5)
    ]
    for status in ("opened", "ended"):
        alert = Alert.opened(event(status), T0)
        for _, blocks in (
            alert_blocks(alert, long, "http://kibana:5601/" + "k" * 2900, answers=True),
            alert_blocks(alert, [], None),
            followup_blocks(alert),
            followup_blocks(Alert.opened(event("updated", severity="critical"), T0)),
        ):
            for block in blocks:
                Block.parse(block).validate_json()  # raises SlackObjectFormationError past a limit

"""The alert outbox: every alert is written first (delivery pending), then delivered, then marked.

An episode is one document, id = alert id. ``opened`` creates it (a replayed ``opened`` finds it
and changes nothing), ``updated``/``ended`` update its window and status; an update to a higher
severity also takes its figures (an escalation). Delivery takes pending documents, counts the
attempt durably *before* posting, and marks them sent with the Slack ts afterwards; an alert whose
earlier attempt may have reached Slack is looked up in the channel before it is posted again.

Delivery is one attempt per alert per pass, never a sleep: the detection loop calls it between
batches, so a Slack outage delays messages, never detection. A failed post is tried again at a later
pass, no sooner than its back-off (2, 4, 8 ... 60 s) or Slack's Retry-After; a rate limit ends the
pass (the other alerts would be refused too). A message Slack refuses for good is parked as failed.
An escalation or the end of an episode whose message was posted becomes a follow-up: the message is
edited to the episode's current state and a reply in its thread says what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Protocol

from monitor.alerting.message import Headline, alert_blocks, followup_blocks
from monitor.errors import DeliveryFailed, UnknownAlert
from monitor.records import Alert, AlertEvent

log = logging.getLogger("bearwatch.alerts")

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """How long a failed post waits: doubling from 2 s with the attempts, at most 60 s; at least
    what Slack asked for."""
    wait = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))
    return timedelta(seconds=max(wait, retry_after or 0.0))


class Outbox(Protocol):
    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[Alert]:
        """Write alert events; returns the episodes this call opened. Opening an episode already
        held (a replay) and updating one not held change nothing."""

    def pending(self) -> list[Alert]:
        """Episodes whose message is not sent yet, oldest first (whatever their next attempt time)."""

    def attempt(self, alert_id: str, error: str | None = None, retry_at: datetime | None = None) -> None:
        """Count a post about to begin (durably, before it), or record why one failed and when to
        try again."""

    def mark_sent(self, alert_id: str, ts: str) -> None:
        """The message is posted, showing the episode as it is now: no follow-up due."""

    def mark_failed(self, alert_id: str, error: str) -> None:
        """Park an alert Slack refused for good: delivery "failed", with the reason; never retried."""

    def followups(self) -> list[Alert]:
        """Sent alerts that escalated or ended since their message was last brought up to date."""

    def mark_notified(self, alert_id: str, status: str, severity: str) -> None:
        """The message (and its thread) now show this status and severity."""

    def judge(self, alert_id: str, verdict: str, by: str, at: datetime) -> None:
        """An analyst's verdict on the alert (from Slack: false_alarm); UnknownAlert when not held."""


class MemoryOutbox:
    """The embedded default's outbox (and a reference for the Elasticsearch one)."""

    def __init__(self) -> None:
        self.docs: dict[str, Alert] = {}

    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[Alert]:
        opened = []
        for event in alerts:
            held = self.docs.get(event.id)
            if held is None:
                if event.status == "opened":
                    self.docs[event.id] = held = Alert.opened(event, now)
                    opened.append(held)
                continue
            self.docs[event.id] = held.recorded(event, now)
        return opened

    def pending(self) -> list[Alert]:
        return [a for a in self.docs.values() if a.delivery == "pending"]

    def attempt(self, alert_id: str, error: str | None = None, retry_at: datetime | None = None) -> None:
        held = self.docs[alert_id]
        if error:
            self.docs[alert_id] = replace(held, last_error=error[:1000], next_attempt_at=retry_at)
        else:
            self.docs[alert_id] = replace(held, attempts=held.attempts + 1)

    def mark_sent(self, alert_id: str, ts: str) -> None:
        held = self.docs[alert_id]
        self.docs[alert_id] = replace(
            held, delivery="sent", slack_ts=ts, notified=held.status, notified_severity=held.severity, followup=False
        )

    def mark_failed(self, alert_id: str, error: str) -> None:
        self.docs[alert_id] = replace(self.docs[alert_id], delivery="failed", last_error=error[:1000])

    def followups(self) -> list[Alert]:
        return [a for a in self.docs.values() if a.delivery == "sent" and a.followup]

    def mark_notified(self, alert_id: str, status: str, severity: str) -> None:
        self.docs[alert_id] = replace(self.docs[alert_id], notified=status, notified_severity=severity, followup=False)

    def judge(self, alert_id: str, verdict: str, by: str, at: datetime) -> None:
        if alert_id not in self.docs:
            raise UnknownAlert(f"no alert {alert_id!r}")
        self.docs[alert_id] = replace(self.docs[alert_id], feedback=verdict, feedback_by=by, feedback_at=at)


@dataclass(frozen=True)
class Delivered:
    """What one delivery pass did."""

    sent: int = 0  # messages posted
    retried: int = 0  # failed this pass: tried again at a later one
    waiting: int = 0  # not tried this pass: not due yet, or after a rate limit
    failed: int = 0  # parked: Slack refused the message for good
    refused: int = 0  # of the retried, those whose token or channel Slack refused (the operator's to fix)
    followups: int = 0  # thread replies posted (escalations, ends)

    @property
    def pending(self) -> int:
        return self.retried + self.waiting


class Channel(Protocol):
    """Where alerts go (monitor.alerting.slack.SlackDelivery): each call is one attempt."""

    def post(self, alert_id: str, text: str, blocks: list[dict], thread_ts: str | None = None) -> str: ...

    def already_posted(self, alert_id: str, since_epoch: float) -> str | None: ...

    @property
    def can_update(self) -> bool: ...

    def update(self, ts: str, text: str, blocks: list[dict]) -> None: ...


def deliver_pending(
    outbox: Outbox,
    channel: Channel,
    headlines: Callable[[list[str]], list[Headline]],
    kibana: str | None = None,
    now: datetime | None = None,
    answers: bool = False,
) -> Delivered:
    """One pass: post every pending alert that is due (one attempt each), then bring sent messages
    up to date (escalations, ends: the message edited, a reply in its thread). `answers`: messages
    carry the "False alarm" and "Wrong sentiment" controls."""
    from monitor.alerting.message import kibana_link

    now = now or now_utc()

    def render(alert: Alert) -> tuple[str, list]:
        link = kibana_link(kibana, alert.key, alert.window_start, alert.window_end)
        return alert_blocks(alert, headlines(list(alert.headline_ids)), link, answers)

    sent = retried = waiting = failed = refused = replies = 0
    due = outbox.pending()
    for n, alert in enumerate(due):
        if alert.next_attempt_at is not None and alert.next_attempt_at > now:
            waiting += 1
            continue
        try:
            if alert.attempts > 0:
                ts = channel.already_posted(alert.id, alert.created_at.timestamp() - 60)
                if ts:
                    outbox.mark_sent(alert.id, ts)
                    sent += 1
                    continue
            outbox.attempt(alert.id)  # durably, before the post: a crash after it is detectable
            outbox.mark_sent(alert.id, channel.post(alert.id, *render(alert)))
            sent += 1
        except DeliveryFailed as exc:
            if exc.permanent:
                log.error("%s: parked as failed, not retried (its alerts index document keeps the reason)", exc)
                outbox.mark_failed(alert.id, str(exc))
                failed += 1
                continue
            retry_at = now + backoff(alert.attempts + 1, exc.retry_after)
            log.warning("%s (stays pending; next attempt at %s)", exc, retry_at.isoformat(timespec="seconds"))
            outbox.attempt(alert.id, str(exc), retry_at)
            retried += 1
            refused += exc.refused
            if exc.retry_after is not None:  # rate-limited: the rest would be refused too
                waiting += len(due) - n - 1
                return Delivered(sent, retried, waiting, failed, refused, replies)
    for alert in outbox.followups():
        assert alert.slack_ts is not None  # it was sent
        try:
            if channel.can_update:  # first the message, then the reply: a retry never replies twice
                channel.update(alert.slack_ts, *render(alert))
            thread = alert.slack_ts if channel.can_update else None  # a webhook cannot reply in a thread
            channel.post(f"{alert.id}#{alert.status}-{alert.severity}", *followup_blocks(alert), thread_ts=thread)
            replies += 1
            outbox.mark_notified(alert.id, alert.status, alert.severity)
        except DeliveryFailed as exc:
            if exc.permanent:  # Slack refuses this follow-up for good: the message keeps its last state
                log.error("%s: the follow-up of %s is not shown in Slack, not retried", exc, alert.id)
                outbox.mark_notified(alert.id, alert.status, alert.severity)
            else:
                log.warning("%s (the follow-up of %s will be retried)", exc, alert.id)
                if exc.retry_after is not None:
                    break
    return Delivered(sent, retried, waiting, failed, refused, replies)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

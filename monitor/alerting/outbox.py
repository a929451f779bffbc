"""The alert outbox: every alert is written first (delivery pending), then delivered, then marked.

An episode is one document, id = alert id. ``opened`` creates it (a replayed ``opened`` finds it
and changes nothing), ``updated``/``ended`` update its window and status. Delivery takes pending
documents, counts the attempt durably *before* posting, and marks them sent with the Slack ts
afterwards; an alert whose earlier attempt may have reached Slack is looked up in the channel
before it is posted again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Protocol

from monitor.alerting.message import Headline, alert_blocks
from monitor.errors import DeliveryFailed
from monitor.records import Alert, AlertEvent

log = logging.getLogger("bearwatch.alerts")


class Outbox(Protocol):
    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[Alert]:
        """Write alert events; returns the episodes this call opened. Opening an episode already
        held (a replay) and updating one not held change nothing."""

    def pending(self) -> list[Alert]:
        """Episodes whose message is not sent yet, oldest first."""

    def attempt(self, alert_id: str, error: str | None = None) -> None:
        """Count a post about to begin (durably, before it), or record why one failed."""

    def mark_sent(self, alert_id: str, ts: str) -> None: ...

    def mark_failed(self, alert_id: str, error: str) -> None:
        """Park an alert Slack refused for good: delivery "failed", with the reason; never retried."""

    def ended_unnotified(self) -> list[Alert]:
        """Sent alerts whose episode has ended since their message was posted."""

    def mark_notified(self, alert_id: str, status: str) -> None: ...


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
            self.docs[event.id] = replace(held, status=event.status, window_end=event.window_end, updated_at=now)
        return opened

    def pending(self) -> list[Alert]:
        return [a for a in self.docs.values() if a.delivery == "pending"]

    def attempt(self, alert_id: str, error: str | None = None) -> None:
        held = self.docs[alert_id]
        self.docs[alert_id] = replace(held, last_error=error) if error else replace(held, attempts=held.attempts + 1)

    def mark_sent(self, alert_id: str, ts: str) -> None:
        held = self.docs[alert_id]
        self.docs[alert_id] = replace(held, delivery="sent", slack_ts=ts, notified=held.status)

    def mark_failed(self, alert_id: str, error: str) -> None:
        self.docs[alert_id] = replace(self.docs[alert_id], delivery="failed", last_error=error[:1000])

    def ended_unnotified(self) -> list[Alert]:
        return [a for a in self.docs.values() if a.delivery == "sent" and a.status == "ended" and a.notified != "ended"]

    def mark_notified(self, alert_id: str, status: str) -> None:
        self.docs[alert_id] = replace(self.docs[alert_id], notified=status)


def deliver_pending(
    outbox: Outbox,
    post: Callable[[str, str, list], str],
    headlines: Callable[[list[str]], list[Headline]],
    already_posted: Callable[[str, float], str | None] | None = None,
    kibana: str | None = None,
    update: Callable[[str, str, list], None] | None = None,
) -> tuple[int, int]:
    """Deliver every pending alert once, and edit sent ones whose episode ended; returns (sent, not
    sent: still pending, or parked as failed when Slack refused the message for good)."""
    from monitor.alerting.message import kibana_link

    def render(alert: Alert) -> tuple[str, list]:
        link = kibana_link(kibana, alert.key, alert.window_start, alert.window_end)
        return alert_blocks(alert, headlines(list(alert.headline_ids)), link)

    sent = failed = 0
    for alert in outbox.pending():
        try:
            if alert.attempts > 0 and already_posted is not None:
                ts = already_posted(alert.id, alert.created_at.timestamp() - 60)
                if ts:
                    outbox.mark_sent(alert.id, ts)
                    sent += 1
                    continue
            outbox.attempt(alert.id)  # durably, before the post: a crash after it is detectable
            outbox.mark_sent(alert.id, post(alert.id, *render(alert)))
            sent += 1
        except DeliveryFailed as exc:
            if exc.permanent:
                log.error("%s: parked as failed, not retried (its alerts index document keeps the reason)", exc)
                outbox.mark_failed(alert.id, str(exc))
            else:
                log.warning("%s (stays pending)", exc)
                outbox.attempt(alert.id, str(exc))
            failed += 1
    if update is not None:
        for alert in outbox.ended_unnotified():
            try:
                assert alert.slack_ts is not None  # it was sent
                update(alert.slack_ts, *render(alert))  # the same message, now saying the episode ended
                outbox.mark_notified(alert.id, "ended")
            except DeliveryFailed as exc:
                if exc.permanent:  # Slack refuses this edit for good: the message keeps its last state
                    log.error("%s: the episode's end is not shown in Slack, not retried", exc)
                    outbox.mark_notified(alert.id, "ended")
                else:
                    log.warning("%s (will retry)", exc)
    return sent, failed


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

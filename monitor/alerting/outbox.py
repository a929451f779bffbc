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
from datetime import datetime, timezone
from typing import Protocol

from monitor.alerting.message import Headline, alert_blocks
from monitor.errors import DeliveryFailed
from monitor.records import AlertEvent
from monitor.schema import format_time

log = logging.getLogger("bearwatch.alerts")


def alert_document(alert: AlertEvent, now: datetime) -> dict:
    key_kind = alert.key.split(":", 1)[0]
    return {
        "id": alert.id,
        "key": alert.key,
        "key_kind": key_kind,
        "kind": alert.kind,
        "severity": alert.severity,
        "status": alert.status,
        "delivery": "pending",
        "window_start": format_time(alert.window_start),
        "window_end": format_time(alert.window_end),
        "created_at": format_time(now),
        "updated_at": format_time(now),
        "observed": alert.observed,
        "baseline": alert.baseline,
        "score": alert.score,
        "headline_ids": list(alert.item_ids),
        "attempts": 0,
    }


class Outbox(Protocol):
    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[dict]:
        """Write alerts; returns the documents of episodes opened by this call."""

    def pending(self) -> list[dict]: ...

    def attempt(self, alert_id: str, error: str | None = None) -> None: ...

    def mark_sent(self, alert_id: str, ts: str) -> None: ...

    def ended_unnotified(self) -> list[dict]:
        """Sent alerts whose episode has ended since their message was posted."""

    def mark_notified(self, alert_id: str, status: str) -> None: ...


class MemoryOutbox:
    """The embedded default's outbox (and a reference for the Elasticsearch one)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}

    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[dict]:
        opened = []
        for alert in alerts:
            doc = self.docs.get(alert.id)
            if doc is None:
                if alert.status == "opened":
                    self.docs[alert.id] = doc = alert_document(alert, now)
                    opened.append(doc)
                continue
            doc.update(status=alert.status, window_end=format_time(alert.window_end), updated_at=format_time(now))
        return opened

    def pending(self) -> list[dict]:
        return [d for d in self.docs.values() if d["delivery"] == "pending"]

    def attempt(self, alert_id: str, error: str | None = None) -> None:
        doc = self.docs[alert_id]
        doc["attempts"] += 0 if error else 1
        if error:
            doc["last_error"] = error

    def mark_sent(self, alert_id: str, ts: str) -> None:
        self.docs[alert_id].update(delivery="sent", slack_ts=ts, notified=self.docs[alert_id]["status"])

    def ended_unnotified(self) -> list[dict]:
        return [
            d
            for d in self.docs.values()
            if d["delivery"] == "sent" and d["status"] == "ended" and d.get("notified") != "ended"
        ]

    def mark_notified(self, alert_id: str, status: str) -> None:
        self.docs[alert_id]["notified"] = status


def deliver_pending(
    outbox: Outbox,
    post: Callable[[str, str, list], str],
    headlines: Callable[[list[str]], list[Headline]],
    already_posted: Callable[[str, float], str | None] | None = None,
    kibana: str | None = None,
    update: Callable[[str, str, list], None] | None = None,
) -> tuple[int, int]:
    """Deliver every pending alert once, and edit sent ones whose episode ended; returns (sent, still pending)."""
    from monitor.alerting.message import kibana_link

    def render(doc: dict) -> tuple[str, list]:
        start = datetime.fromisoformat(doc["window_start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(doc["window_end"].replace("Z", "+00:00"))
        return alert_blocks(doc, headlines(doc.get("headline_ids", [])), kibana_link(kibana, doc["key"], start, end))

    sent = failed = 0
    for doc in outbox.pending():
        try:
            if doc.get("attempts", 0) > 0 and already_posted is not None:
                created = datetime.fromisoformat(doc["created_at"].replace("Z", "+00:00")).timestamp()
                ts = already_posted(doc["id"], created - 60)
                if ts:
                    outbox.mark_sent(doc["id"], ts)
                    sent += 1
                    continue
            outbox.attempt(doc["id"])  # durably, before the post: a crash after it is detectable
            outbox.mark_sent(doc["id"], post(doc["id"], *render(doc)))
            sent += 1
        except DeliveryFailed as exc:
            log.warning("%s (stays pending)", exc)
            outbox.attempt(doc["id"], str(exc))
            failed += 1
    if update is not None:
        for doc in outbox.ended_unnotified():
            try:
                update(doc["slack_ts"], *render(doc))  # the same message, now saying the episode ended
                outbox.mark_notified(doc["id"], "ended")
            except DeliveryFailed as exc:
                log.warning("%s (will retry)", exc)
    return sent, failed


def now_utc() -> datetime:
    return datetime.now(timezone.utc)

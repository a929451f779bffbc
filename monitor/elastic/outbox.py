"""The alert outbox on Elasticsearch (the alerts index): see monitor/alerting/outbox.py for the contract."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from monitor.elastic.client import call
from monitor.errors import StoreUnavailable, UnknownAlert
from monitor.records import Alert, AlertEvent
from monitor.schema import format_time

log = logging.getLogger("bearwatch.alerts")


class ElasticsearchOutbox:
    """Writes do not wait for a refresh; a search that must see them (pending, ended) refreshes
    the index first when something was written since: milliseconds, instead of up to the refresh
    interval (1 s) per write."""

    def __init__(self, client, index: str) -> None:
        self.client = client
        self.index = index
        self._dirty = True  # another process may have written just before this one started

    def _write(self, action: str, fn, **kwargs):
        self._dirty = True
        return call(action, fn, **kwargs)

    def _fresh(self) -> None:
        if self._dirty:
            call("refresh", self.client.indices.refresh, index=self.index)
            self._dirty = False

    def record(self, alerts: Sequence[AlertEvent], now: datetime) -> list[Alert]:
        """All of a batch's alert events: the episodes they concern read in one request, each
        event applied as the memory outbox does (Alert.opened, Alert.recorded), the changes written
        in one bulk request (only the fields that changed: an analyst's verdict written meanwhile
        is kept). Opening an episode that is already there (a replay) is skipped; updating one that
        is not is skipped with a warning; any other refusal raises, and the caller keeps the events
        to record them again."""
        if not alerts:
            return []
        ids = sorted({a.id for a in alerts})
        found = call("alert reads", self.client.mget, index=self.index, ids=ids)["docs"]
        held = {d["_id"]: Alert.from_json(d["_source"]) for d in found if d.get("found")}
        stored = dict(held)
        created: dict[str, Alert] = {}
        for event in alerts:
            if event.status == "opened":
                if event.id not in held:
                    held[event.id] = created[event.id] = Alert.opened(event, now)
            elif event.id in held:
                held[event.id] = held[event.id].recorded(event, now)
            else:
                # An episode the outbox never held (its index was recreated): as the memory outbox,
                # nothing to update. Raising would retry the batch, and the detector, forever.
                log.warning("alert %s: an update of an episode the outbox does not hold; skipped", event.id)
        operations: list[dict] = []
        for alert_id, alert in held.items():
            doc = alert.to_json()
            if alert_id in created:
                operations += [{"create": {"_index": self.index, "_id": alert_id}}, doc]
            elif alert != stored[alert_id]:
                before = stored[alert_id].to_json()
                changed = {k: v for k, v in doc.items() if before.get(k) != v}
                operations += [{"update": {"_index": self.index, "_id": alert_id}}, {"doc": changed}]
        if not operations:
            return []
        result = self._write("alert writes", self.client.bulk, operations=operations)
        opened: list[Alert] = []
        failed: list[str] = []
        for item in result["items"]:
            ((op, outcome),) = item.items()
            status = outcome.get("status", 500)
            if op == "create" and status == 409:
                continue  # another writer opened it between the read and this write: nothing new
            if status >= 300:
                failed.append(f"{op} {outcome.get('_id')}: {status} {(outcome.get('error') or {}).get('type')}")
            elif op == "create":
                opened.append(created[outcome["_id"]])
        if failed:
            raise StoreUnavailable(f"Elasticsearch refused alert writes: {'; '.join(failed[:5])}")
        first = {e.id: n for n, e in reversed(list(enumerate(alerts)))}
        return sorted(opened, key=lambda a: first[a.id])  # in the order of the events, as the memory outbox

    def pending(self) -> list[Alert]:
        self._fresh()
        response = call(
            "pending alerts",
            self.client.search,
            index=self.index,
            query={"term": {"delivery": "pending"}},
            sort=[{"created_at": "asc"}],
            size=100,
        )
        return [Alert.from_json(h["_source"]) for h in response["hits"]["hits"]]

    def attempt(self, alert_id: str, error: str | None = None, retry_at: datetime | None = None) -> None:
        if error:
            doc = {"last_error": error[:1000], "next_attempt_at": format_time(retry_at) if retry_at else None}
            self._write("alert attempt", self.client.update, index=self.index, id=alert_id, doc=doc)
            return
        doc = call("alert get", self.client.get, index=self.index, id=alert_id)["_source"]
        self._write(
            "alert attempt",
            self.client.update,
            index=self.index,
            id=alert_id,
            doc={"attempts": doc.get("attempts", 0) + 1},
        )

    def mark_sent(self, alert_id: str, ts: str) -> None:
        held = call("alert get", self.client.get, index=self.index, id=alert_id)["_source"]
        doc = {
            "delivery": "sent",
            "slack_ts": ts,
            "notified": held["status"],
            "notified_severity": held["severity"],
            "followup": False,
        }
        self._write("alert sent", self.client.update, index=self.index, id=alert_id, doc=doc)

    def mark_failed(self, alert_id: str, error: str) -> None:
        self._write(
            "alert failed",
            self.client.update,
            index=self.index,
            id=alert_id,
            doc={"delivery": "failed", "last_error": error[:1000]},
        )

    def followups(self) -> list[Alert]:
        query = {"bool": {"filter": [{"term": {"delivery": "sent"}}, {"term": {"followup": True}}]}}
        self._fresh()
        response = call("alert follow-ups", self.client.search, index=self.index, query=query, size=100)
        return [Alert.from_json(h["_source"]) for h in response["hits"]["hits"]]

    def mark_notified(self, alert_id: str, status: str, severity: str) -> None:
        doc = {"notified": status, "notified_severity": severity, "followup": False}
        self._write("alert notified", self.client.update, index=self.index, id=alert_id, doc=doc)

    def judge(self, alert_id: str, verdict: str, by: str, at: datetime) -> None:
        from elasticsearch import NotFoundError

        doc = {"feedback": verdict, "feedback_by": by, "feedback_at": format_time(at)}
        try:
            self._write("alert feedback", self.client.update, index=self.index, id=alert_id, doc=doc)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, NotFoundError):
                raise UnknownAlert(f"no alert {alert_id!r}") from None
            raise

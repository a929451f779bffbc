"""The alert outbox on Elasticsearch (the alerts index): see monitor/alerting/outbox.py for the contract."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from monitor.elastic.client import call
from monitor.errors import StoreUnavailable
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
        """All of a batch's alert events in one bulk request.
        Opening an episode that is already there (a replay) is skipped; any other refusal raises,
        and the caller keeps the events to record them again."""
        operations: list[dict] = []
        docs: list[Alert | None] = []  # the episode each operation creates (None: an update)
        for alert in alerts:
            if alert.status == "opened":
                doc = Alert.opened(alert, now)
                operations += [{"create": {"_index": self.index, "_id": alert.id}}, doc.to_json()]
                docs.append(doc)
            else:
                fields = {
                    "status": alert.status,
                    "window_end": format_time(alert.window_end),
                    "updated_at": format_time(now),
                }
                operations += [{"update": {"_index": self.index, "_id": alert.id}}, {"doc": fields}]
                docs.append(None)
        if not operations:
            return []
        result = self._write("alert writes", self.client.bulk, operations=operations)
        opened: list[Alert] = []
        failed: list[str] = []
        for created, item in zip(docs, result["items"]):
            ((op, outcome),) = item.items()
            status = outcome.get("status", 500)
            if op == "create" and status == 409:
                continue  # a replay re-opening an episode already written: nothing new
            if op == "update" and status == 404:
                # An episode the outbox never held (its index was recreated): as the memory outbox,
                # nothing to update. Raising would retry the batch, and the detector, forever.
                log.warning("alert %s: an update of an episode the outbox does not hold; skipped", outcome.get("_id"))
                continue
            if status >= 300:
                failed.append(f"{op} {outcome.get('_id')}: {status} {(outcome.get('error') or {}).get('type')}")
            elif created is not None:
                opened.append(created)
        if failed:
            raise StoreUnavailable(f"Elasticsearch refused alert writes: {'; '.join(failed[:5])}")
        return opened

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

    def attempt(self, alert_id: str, error: str | None = None) -> None:
        if error:
            self._write(
                "alert attempt", self.client.update, index=self.index, id=alert_id, doc={"last_error": error[:1000]}
            )
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
        status = call("alert get", self.client.get, index=self.index, id=alert_id)["_source"]["status"]
        self._write(
            "alert sent",
            self.client.update,
            index=self.index,
            id=alert_id,
            doc={"delivery": "sent", "slack_ts": ts, "notified": status},
        )

    def mark_failed(self, alert_id: str, error: str) -> None:
        self._write(
            "alert failed",
            self.client.update,
            index=self.index,
            id=alert_id,
            doc={"delivery": "failed", "last_error": error[:1000]},
        )

    def ended_unnotified(self) -> list[Alert]:
        query = {
            "bool": {
                "filter": [{"term": {"delivery": "sent"}}, {"term": {"status": "ended"}}],
                "must_not": [{"term": {"notified": "ended"}}],
            }
        }
        self._fresh()
        response = call("ended alerts", self.client.search, index=self.index, query=query, size=100)
        return [Alert.from_json(h["_source"]) for h in response["hits"]["hits"]]

    def mark_notified(self, alert_id: str, status: str) -> None:
        self._write("alert notified", self.client.update, index=self.index, id=alert_id, doc={"notified": status})

"""Analysts' labels on Elasticsearch (the labels index): see monitor/labels_store.py for the contract."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from monitor.elastic.client import translated
from monitor.errors import StoreUnavailable
from monitor.labels_store import Label, _fold, _write_label_csvs
from monitor.schema import format_time, parse_stored_time


class ElasticsearchLabels:
    """`news_index`: where scored items are; a label of one of them that does not say when its text
    was published gets the item's time (the retrieval memory never lets an item use a label of
    something published after it)."""

    def __init__(self, client, index: str, news_index: str | None = None) -> None:
        self.client, self.index, self.news_index = client, index, news_index

    def put(self, labels: Iterable[Label], chunk: int = 500) -> int:
        """Write labels in bulk: one multi-get and one bulk request per chunk, each write guarded by
        the sequence number it read (a concurrent correction makes it re-read and retry)."""
        written, batch = 0, []
        for label in labels:
            batch.append(label)
            if len(batch) >= chunk:
                written += self._put_chunk(batch)
                batch = []
        if batch:
            written += self._put_chunk(batch)
        return written

    def _dated(self, labels: list[Label]) -> list[Label]:
        undated = sorted({label.item_id for label in labels if label.published_at is None})
        if not self.news_index or not undated:
            return labels
        from elasticsearch import NotFoundError

        with translated("label dating"):
            try:
                docs = self.client.mget(index=self.news_index, ids=undated, source=["published_at"])["docs"]
            except NotFoundError:
                return labels  # no news index yet: nothing scored to take a time from
        times = {
            d["_id"]: parse_stored_time(d["_source"]["published_at"])
            for d in docs
            if d.get("found") and d["_source"].get("published_at")
        }
        return [replace(x, published_at=times[x.item_id]) if x.item_id in times else x for x in labels]

    def _put_chunk(self, labels: list[Label]) -> int:
        labels = self._dated(labels)
        pending: dict[str, list[Label]] = {}
        for label in labels:  # the same item twice in one file: each later one is a correction
            pending.setdefault(label.item_id, []).append(label)
        written = 0
        for _ in range(5):  # optimistic concurrency: re-read and retry what a concurrent writer changed
            if not pending:
                return written
            with translated("label write"):
                found = self.client.mget(index=self.index, ids=list(pending))["docs"]
                actions: list[dict] = []
                for hit in found:
                    previous = hit["_source"] if hit.get("found") else None
                    doc = _fold(previous, pending[hit["_id"]])
                    if doc is previous or doc is None:  # nothing new for this item
                        written += len(pending.pop(hit["_id"]))
                        continue
                    guard = (
                        {"if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}
                        if previous is not None
                        else {}
                    )
                    actions.append(
                        {"create" if previous is None else "index": {"_index": self.index, "_id": hit["_id"], **guard}}
                    )
                    actions.append(doc)
                if not actions:
                    return written
                result = self.client.bulk(operations=actions, refresh="wait_for")
            for item in result["items"]:
                outcome = next(iter(item.values()))
                if outcome.get("status") in (200, 201):
                    written += len(pending.pop(outcome["_id"]))
                elif outcome.get("status") != 409:
                    raise StoreUnavailable(
                        f"Elasticsearch rejected the label of {outcome['_id']}: {outcome.get('error')}"
                    )
        raise StoreUnavailable(f"labels of {', '.join(sorted(pending)[:5])} kept conflicting with concurrent writes")

    def since(self, when: datetime) -> int:
        """How many items were labelled (or corrected) after `when`."""
        with translated("label count"):
            return self.client.count(index=self.index, query={"range": {"labelled_at": {"gt": format_time(when)}}})[
                "count"
            ]

    def export(self, folder: str | Path) -> dict[str, Path]:
        """Every current label as training CSVs (text,label), one per head: {task: path}."""
        from elasticsearch import helpers

        with translated("label export"):
            docs = [
                hit["_source"]
                for hit in helpers.scan(self.client, index=self.index, query={"query": {"match_all": {}}})
            ]
        return _write_label_csvs(folder, docs)

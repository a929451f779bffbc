"""The detection stage's snapshots on Elasticsearch (the state index)."""

from __future__ import annotations

from datetime import datetime, timezone

from monitor.elastic.client import translated


class SnapshotStore:
    """Tracker state + offsets as one Elasticsearch document (id per scored topic)."""

    def __init__(self, client, index: str, doc_id: str) -> None:
        self.client, self.index, self.doc_id = client, index, doc_id

    def load(self) -> dict | None:
        from elasticsearch import NotFoundError

        with translated("snapshot load"):
            try:
                return self.client.get(index=self.index, id=self.doc_id)["_source"]["snapshot"]
            except NotFoundError:
                return None

    def save(self, snapshot: dict) -> None:
        with translated("snapshot save"):
            # No refresh wait: load() is a get by id, which sees the latest write at once.
            self.client.index(
                index=self.index,
                id=self.doc_id,
                document={"updated_at": datetime.now(timezone.utc).isoformat(), "snapshot": snapshot},
            )

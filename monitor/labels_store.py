"""Analysts' labels in the Elasticsearch labels index: the retraining module's new data.

One document per item (id = item id). A correction replaces the item's label and keeps the
earlier ones, with who and when, in ``history``. Writes use optimistic concurrency, so two
analysts correcting the same item at once both end up in the history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from monitor.labelled_files import LabelledFileError, read_rows
from monitor.labels import UnknownLabel, canonical_sentiment, canonical_topic
from monitor.retrieval.history import StoreUnavailable
from monitor.schema import format_time


class InvalidLabel(ValueError):
    """A label row that cannot be used; the message says why."""


@dataclass(frozen=True)
class Label:
    item_id: str
    text: str
    labelled_by: str
    labelled_at: datetime
    sentiment: str | None = None
    topic: str | None = None

    def document(self) -> dict:
        return {"item_id": self.item_id, "text": self.text, "sentiment": self.sentiment, "topic": self.topic,
                "labelled_by": self.labelled_by, "labelled_at": format_time(self.labelled_at)}


def make_label(row: dict, labelled_by: str, now: datetime | None = None) -> Label:
    """Validate one row (text, and sentiment and/or topic; item_id optional)."""
    text = " ".join(str(row.get("text") or "").split())
    if not text:
        raise InvalidLabel("text is empty")
    try:
        sentiment = canonical_sentiment(str(row["sentiment"])) if row.get("sentiment") else None
        topic = canonical_topic(str(row["topic"])) if row.get("topic") else None
    except UnknownLabel as exc:
        raise InvalidLabel(str(exc)) from None
    if sentiment is None and topic is None:
        raise InvalidLabel("neither sentiment nor topic given")
    item_id = str(row.get("item_id") or "").strip() or "text:" + hashlib.sha1(text.encode()).hexdigest()[:16]
    who = str(row.get("labelled_by") or labelled_by).strip()
    if not who:
        raise InvalidLabel("labelled_by is required")
    return Label(item_id, text, who, now or datetime.now(timezone.utc), sentiment, topic)


def read_label_file(path: str | Path, labelled_by: str) -> tuple[list[Label], list[tuple[int, str]]]:
    """Labels from a CSV/JSONL file; bad rows come back as (line, reason), good rows are kept."""
    labels, rejected = [], []
    try:
        for line, row in read_rows(path, required=("text",)):
            try:
                labels.append(make_label(row, labelled_by))
            except InvalidLabel as exc:
                rejected.append((line, str(exc)))
    except LabelledFileError as exc:
        rejected.append((0, str(exc)))
    return labels, rejected


class MemoryLabels:
    """The in-process labels store (embedded default): the same operations, kept in memory."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}

    def put(self, labels: Iterable[Label]) -> int:
        n = 0
        for label in labels:
            doc, previous = label.document(), self.docs.get(label.item_id)
            if previous is not None:
                doc["history"] = (previous.get("history") or []) + [{k: previous.get(k) for k in ("sentiment", "topic", "labelled_by", "labelled_at")}]
            self.docs[label.item_id] = doc
            n += 1
        return n

    def since(self, when: datetime) -> int:
        return sum(1 for d in self.docs.values() if d["labelled_at"] > format_time(when))

    def export(self, folder: str | Path) -> dict[str, Path]:
        return _write_label_csvs(folder, self.docs.values())


def _write_label_csvs(folder: str | Path, docs: Iterable[dict]) -> dict[str, Path]:
    import csv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {task: folder / f"labels-{task}.csv" for task in ("sentiment", "topic")}
    handles = {task: path.open("w", newline="", encoding="utf-8") for task, path in paths.items()}
    try:
        writers = {task: csv.writer(fh) for task, fh in handles.items()}
        for w in writers.values():
            w.writerow(["text", "label"])
        for doc in docs:
            for task, w in writers.items():
                if doc.get(task):
                    w.writerow([doc["text"], doc[task]])
    finally:
        for fh in handles.values():
            fh.close()
    return paths


class ElasticsearchLabels:
    def __init__(self, client, index: str) -> None:
        self.client, self.index = client, index

    def put(self, labels: Iterable[Label]) -> int:
        from elasticsearch import ApiError, ConflictError, NotFoundError, TransportError

        written = 0
        for label in labels:
            for _ in range(5):  # optimistic concurrency: re-read and retry on a concurrent correction
                try:
                    try:
                        current = self.client.get(index=self.index, id=label.item_id)
                        previous, guard = current["_source"], {"if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]}
                    except NotFoundError:
                        previous, guard = None, {"op_type": "create"}
                    doc = label.document()
                    if previous is not None:
                        history = previous.get("history") or []
                        doc["history"] = history + [{k: previous.get(k) for k in ("sentiment", "topic", "labelled_by", "labelled_at")}]
                    self.client.index(index=self.index, id=label.item_id, document=doc, refresh="wait_for", **guard)
                    written += 1
                    break
                except ConflictError:
                    continue
                except (ApiError, TransportError) as exc:
                    raise StoreUnavailable(f"Elasticsearch label write failed: {exc}") from exc
            else:
                raise StoreUnavailable(f"label of {label.item_id} kept conflicting with concurrent writes")
        return written

    def since(self, when: datetime) -> int:
        """How many items were labelled (or corrected) after `when`."""
        from elasticsearch import ApiError, TransportError

        try:
            return self.client.count(index=self.index, query={"range": {"labelled_at": {"gt": format_time(when)}}})["count"]
        except (ApiError, TransportError) as exc:
            raise StoreUnavailable(f"Elasticsearch label count failed: {exc}") from exc

    def export(self, folder: str | Path) -> dict[str, Path]:
        """Every current label as training CSVs (text,label), one per head: {task: path}."""
        from elasticsearch import ApiError, TransportError, helpers

        try:
            docs = [hit["_source"] for hit in helpers.scan(self.client, index=self.index, query={"query": {"match_all": {}}})]
        except (ApiError, TransportError) as exc:
            raise StoreUnavailable(f"Elasticsearch label export failed: {exc}") from exc
        return _write_label_csvs(folder, docs)

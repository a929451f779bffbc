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

from monitor.errors import (
    InvalidItem,
    InvalidLabel,
    LabelledFileError,
    UnknownLabel,
)
from monitor.labelled_files import read_rows
from monitor.labels import canonical_sentiment, canonical_topic
from monitor.schema import format_time, parse_time
from monitor.text import normalise_edge


@dataclass(frozen=True)
class Label:
    item_id: str
    text: str
    labelled_by: str
    labelled_at: datetime
    sentiment: str | None = None
    topic: str | None = None
    published_at: datetime | None = None  # when the labelled text was published, if known (retrieval leakage rule)

    def document(self) -> dict:
        doc = {
            "item_id": self.item_id,
            "text": self.text,
            "sentiment": self.sentiment,
            "topic": self.topic,
            "labelled_by": self.labelled_by,
            "labelled_at": format_time(self.labelled_at),
        }
        if self.published_at is not None:
            doc["published_at"] = format_time(self.published_at)
        return doc


def edge(value) -> str:
    return normalise_edge(str(value or ""))[0]


def make_label(row: dict, labelled_by: str, now: datetime | None = None) -> Label:
    """Validate one row (text, and sentiment and/or topic; item_id and published_at optional)."""
    text = " ".join(edge(row.get("text")).split())  # repaired as news text is (lone surrogates, controls)
    if not text:
        raise InvalidLabel("text is empty")
    try:
        sentiment = canonical_sentiment(str(row["sentiment"])) if row.get("sentiment") else None
        topic = canonical_topic(str(row["topic"])) if row.get("topic") else None
    except UnknownLabel as exc:
        raise InvalidLabel(str(exc)) from None
    if sentiment is None and topic is None:
        raise InvalidLabel("neither sentiment nor topic given")
    item_id = edge(row.get("item_id")).strip() or "text:" + hashlib.sha1(text.encode()).hexdigest()[:16]
    who = edge(row.get("labelled_by") or labelled_by).strip()
    if not who:
        raise InvalidLabel("labelled_by is required")
    published_at = None
    if row.get("published_at"):
        try:
            published_at = parse_time(str(row["published_at"]))
        except InvalidItem as exc:
            raise InvalidLabel(str(exc)) from None
    return Label(item_id, text, who, now or datetime.now(timezone.utc), sentiment, topic, published_at)


HISTORY_FIELDS = ("sentiment", "topic", "labelled_by", "labelled_at")


def read_label_file(
    path: str | Path, labelled_by: str, label_task: str | None = None
) -> tuple[list[Label], list[tuple[int, str]]]:
    """Labels from a CSV/JSONL file; bad rows come back as (line, reason), good rows are kept.
    `label_task`: a `label` column (`text,label` files) is the label of that head."""
    labels: list[Label] = []
    rejected: list[tuple[int, str]] = []
    try:
        for line, row in read_rows(path, required=("text",), bad_rows=rejected):
            if label_task and row.get("label") not in (None, "") and not row.get(label_task):
                row = {**row, label_task: row["label"]}
            try:
                labels.append(make_label(row, labelled_by))
            except InvalidLabel as exc:
                rejected.append((line, str(exc)))
    except LabelledFileError as exc:
        rejected.append((0, str(exc)))
    return labels, rejected


def _fold(previous: dict | None, labels: list[Label]) -> dict | None:
    """The stored document after `labels` (oldest first) are applied to `previous`: the last one
    wins, every earlier one goes to its history."""
    doc = previous
    for label in labels:
        new = label.document()
        if doc is not None and all(doc.get(k) == new[k] for k in ("sentiment", "topic", "labelled_by")):
            continue  # the same label again (a file imported twice): nothing changes
        if doc is not None:
            new["history"] = (doc.get("history") or []) + [{k: doc.get(k) for k in HISTORY_FIELDS}]
        doc = new
    return doc


class MemoryLabels:
    """The in-process labels store (embedded default): the same operations, kept in memory."""

    def __init__(self) -> None:
        self.docs: dict[str, dict] = {}

    def put(self, labels: Iterable[Label]) -> int:
        n = 0
        for label in labels:
            self.docs[label.item_id] = _fold(self.docs.get(label.item_id), [label])  # type: ignore[assignment]
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


INBOX_SUFFIXES = (".csv", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class InboxFile:
    name: str
    written: int
    rejected: list[tuple[int, str]]
    moved_to: Path


def import_inbox(folder: str | Path, store, settle_s: float = 2.0, now: float | None = None) -> list[InboxFile]:
    """Import every labelled file dropped in `folder`, then move it to ``done/`` (with a
    ``.rejected.txt`` report of its bad rows beside it) or, when no row was usable, to ``rejected/``.

    Files are taken when complete: hidden and ``.tmp``/``.part`` names are skipped, and so is a
    file modified in the last `settle_s` seconds (drop files in with a rename to be safe). A file
    is moved only after its labels are stored, so a crash in between imports it again, which
    changes nothing (the same label twice is no correction). A store outage raises and leaves
    the file where it is."""
    import shutil
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    results = []
    for path in sorted(folder.iterdir()):
        if (
            not path.is_file()
            or path.name.startswith(".")
            or path.suffix not in INBOX_SUFFIXES
            or now - path.stat().st_mtime < settle_s
        ):
            continue
        labels, rejected = read_label_file(path, f"inbox:{path.name}")
        written = store.put(labels) if labels else 0
        target = folder / ("done" if labels else "rejected")
        target.mkdir(exist_ok=True)
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        moved = target / f"{stamp}-{path.name}"
        if rejected:
            moved.with_name(moved.name + ".rejected.txt").write_text(
                "".join(f"line {line}: {why}\n" for line, why in rejected), encoding="utf-8"
            )
        shutil.move(str(path), moved)
        results.append(InboxFile(path.name, written, rejected, moved))
    return results

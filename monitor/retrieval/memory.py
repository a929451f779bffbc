"""The retrieval memory: labelled items, embedded by the serving model, searched before each score.

Analysts' labels (``bearwatch label add|import``, the trainer's inbox) are the memory. Before a
batch is scored, the memory embeds every label the serving model has not embedded yet (new labels,
corrections, and all of them after a model change: embeddings are kept per model version, so they
always match the encoder that scores). Each item of the batch then retrieves its k nearest labelled
items by the model's embedding, and :class:`monitor.scoring.fusion.MemoryFusion` turns their labels
into a correction of the item's logits. A label therefore changes the next batch's scores: no
retraining, no restart.

Two implementations give the same neighbours (exact search, ties broken by item id):
:class:`InProcessMemory` (the embedded default, ``bearwatch evaluate --labels``) and
:class:`monitor.elastic.memory.ElasticsearchMemory` (the labels index, searched in a mirror kept
current or by one ``msearch`` of kNN requests per batch).

Leakage rules, as for the model's own pool (monitor/retrieval/vectors.py): a query never retrieves
its own id, an item of its near-duplicate group, an item at least ``near_duplicate`` similar (the
model's MemoryFusion says how similar), or (when both are dated) an item published at or after it.
A label whose text the model cannot embed stays out, with the reason logged, and is not tried again
for that model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from monitor.errors import BearwatchError
from monitor.labels_store import Label
from monitor.retrieval.vectors import Neighbour
from monitor.schema import format_time, parse_stored_time
from monitor.text import dedup_key

log = logging.getLogger("bearwatch.memory")


@dataclass(frozen=True)
class MemoryQuery:
    vector: np.ndarray  # the item's embedding by the serving model (unit length)
    id: str | None = None
    group: str | None = None  # dedup key of the item's scored text
    published_at: datetime | None = None


class Embedder(Protocol):
    """What the memory needs of the serving model (OnnxScorer)."""

    @property
    def version(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Unit-length embeddings and the encoder's own probabilities per task, one row per text."""
        ...


class RetrievalMemory(Protocol):
    def sync(self, embedder: Embedder) -> int:
        """Embed, with `embedder`, every label it has not embedded yet; returns how many. Raises
        StoreUnavailable when the store is down (the batch is retried)."""

    def search(
        self, queries: Sequence[MemoryQuery], k: int, version: str, near_duplicate: float
    ) -> list[list[Neighbour]]:
        """For each query, up to k labelled items embedded by model `version`, nearest first."""

    def size(self, version: str) -> int:
        """How many labelled items the memory can retrieve for model `version`."""


def millis(t: datetime) -> datetime:
    """A time as the stores keep it (millisecond precision), so both apply the same cut."""
    return parse_stored_time(format_time(t))


def embed_each(embedder: Embedder, texts: Sequence[str]) -> list[tuple[np.ndarray, dict[str, np.ndarray]] | str]:
    """Per text: (embedding, probabilities) or why it could not be embedded. The batch first, then
    one by one if it fails, so that one text the model cannot take never blocks the others."""
    if not texts:
        return []
    try:
        vectors, probabilities = embedder.embed(texts)
        return [(vectors[i], {t: p[i] for t, p in probabilities.items()}) for i in range(len(texts))]
    except Exception as exc:  # noqa: BLE001 — whatever one label's text does to the tokenizer or the model
        log.warning("embedding %d labels failed (%s: %s); one by one", len(texts), type(exc).__name__, exc)
    out: list[tuple[np.ndarray, dict[str, np.ndarray]] | str] = []
    for text in texts:
        try:
            vectors, probabilities = embedder.embed([text])
            out.append((vectors[0], {t: p[0] for t, p in probabilities.items()}))
        except BearwatchError as exc:
            out.append(f"embedding failed: {exc}"[:500])
        except Exception as exc:  # noqa: BLE001 — a bug worth a report, but one label must not stop scoring
            log.exception("embedding one label failed unexpectedly")
            out.append(f"embedding failed: unexpected {type(exc).__name__}: {exc}"[:500])
    return out


@dataclass(frozen=True)
class MemoryEntry:
    item_id: str
    text: str
    sentiment: str | None
    topic: str | None
    published_at: datetime | None
    group: str

    @classmethod
    def of(cls, label: Label) -> MemoryEntry:
        when = millis(label.published_at) if label.published_at is not None else None
        return cls(label.item_id, label.text, label.sentiment, label.topic, when, dedup_key(label.text))


def similarity(cosines: np.ndarray) -> np.ndarray:
    """Cosines as both memories rank and weigh neighbours: rounded to 1e-6, so that the last bits,
    in which float32 sums in numpy and in Lucene differ, decide neither the order nor the weights."""
    return np.round(np.asarray(cosines, dtype=np.float64), 6)


def rank(scores: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k best finite scores, best first, ties by `ties` (item ids, or the rows of an
    id-ordered index). Only the candidates at or above the k-th score are sorted."""
    finite = np.flatnonzero(np.isfinite(scores))
    if len(finite) > k:
        kth = np.partition(scores[finite], len(finite) - k)[len(finite) - k]
        finite = finite[scores[finite] >= kth]  # ties at the k-th included, then cut in order
    order = np.lexsort((ties[finite], -scores[finite]))
    return finite[order[:k]]


class MemoryIndex:
    """Embedded labels by item id, searched exactly: what both memories search.

    Rows are ranked in item-id order and each query is one matrix-vector product, so the result
    for an item does not depend on what else is in its batch.
    """

    def __init__(self) -> None:
        self._rows: dict[str, tuple[MemoryEntry, np.ndarray, dict[str, tuple[float, ...]]]] = {}
        self._built: tuple | None = None  # (ids, vectors, groups, times, rows) in id order

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._rows

    def put(self, entry: MemoryEntry, vector, probabilities: Mapping) -> None:
        self._rows[entry.item_id] = (
            entry,
            np.asarray(vector, dtype=np.float32),
            {task: tuple(float(x) for x in p) for task, p in probabilities.items()},
        )
        self._built = None

    def remove(self, item_id: str) -> None:
        if self._rows.pop(item_id, None) is not None:
            self._built = None

    def clear(self) -> None:
        self._rows.clear()
        self._built = None

    def _arrays(self) -> tuple:
        if self._built is None:
            ids = sorted(self._rows)
            rows = [self._rows[i] for i in ids]
            by_group: dict[str, list[int]] = {}
            for row, r in enumerate(rows):
                by_group.setdefault(r[0].group, []).append(row)
            self._built = (
                {item_id: row for row, item_id in enumerate(ids)},
                np.stack([r[1] for r in rows]),
                by_group,
                np.array([r[0].published_at.timestamp() if r[0].published_at else np.nan for r in rows]),
                rows,
            )
        return self._built

    def search(self, queries: Sequence[MemoryQuery], k: int, near_duplicate: float) -> list[list[Neighbour]]:
        """A float32 matrix product per 64 queries finds the candidates; their similarities are then
        computed again in float64, one query at a time, and rounded: an item's numbers do not depend
        on which items share its batch (float32 products do, in the last bits)."""
        if not self._rows or k == 0:
            return [[] for _ in queries]
        row_of_id, vectors, by_group, times, rows = self._arrays()
        n, results = len(rows), []
        for start in range(0, len(queries), 64):
            chunk = queries[start : start + 64]
            q32 = np.stack([np.asarray(q.vector, dtype=np.float32) for q in chunk])
            block = q32 @ vectors.T
            for r, query in enumerate(chunk):
                if query.id is not None and query.id in row_of_id:
                    block[r, row_of_id[query.id]] = -np.inf
                if query.group is not None and query.group in by_group:
                    block[r, by_group[query.group]] = -np.inf
            cut = np.array([millis(q.published_at).timestamp() if q.published_at else np.inf for q in chunk])
            block[times[None, :] >= cut[:, None]] = -np.inf  # undated labels (NaN) are never later
            if n > k:  # the k-th best of each row; rows within 1e-4 of it are the candidates
                kth = np.partition(block, n - k, axis=1)[:, n - k]
                candidates = (block >= (kth - 1e-4)[:, None]) & np.isfinite(block)
            else:
                candidates = np.isfinite(block)
            for r, q in enumerate(q32):
                top = _top(np.flatnonzero(candidates[r]), block[r], vectors, q, k, near_duplicate)
                results.append([_neighbour(rows[col], score) for col, score in top])
        return results


def _top(
    candidates: np.ndarray, s: np.ndarray, vectors: np.ndarray, q: np.ndarray, k: int, near_duplicate: float
) -> list[tuple[int, float]]:
    """The k best (row, similarity) of one query, ties by row (= item id order). The candidates'
    similarities are computed again in float64 (far more than float32's error on unit vectors
    separates them from the rest) and rounded, as the stores rank. `s`: the query's float32
    similarities, -inf where excluded, for when near-duplicates took places among the candidates."""

    def exact(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = similarity(vectors[rows].astype(np.float64) @ q.astype(np.float64))
        keep = scores < near_duplicate
        return rows[keep], scores[keep]

    found, scores = exact(candidates)
    if len(found) < k and len(candidates) < np.isfinite(s).sum():
        found, scores = exact(np.flatnonzero(np.isfinite(s)))
    order = np.lexsort((found, -scores))[:k]
    return [(int(found[i]), float(scores[i])) for i in order]


def _neighbour(row: tuple, score: float) -> Neighbour:
    entry, _, probabilities = row
    return Neighbour(
        id=entry.item_id,
        text=entry.text,
        score=score,
        sentiment=entry.sentiment,
        topic=entry.topic,
        predicted=probabilities,
    )


class InProcessMemory:
    """The memory in the process: labels added with :meth:`add`, embedded at the next sync.

    >>> memory = InProcessMemory(read_label_file("labels.csv", "me")[0])  # doctest: +SKIP
    >>> memory.sync(scorer)  # the serving model embeds them  # doctest: +SKIP
    300
    """

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self._entries: dict[str, MemoryEntry] = {}
        self._failed: dict[str, str] = {}  # item id -> why its text could not be embedded
        self._version: str | None = None
        self.index = MemoryIndex()
        self.add(labels)

    def add(self, labels: Iterable[Label]) -> int:
        """Labels in (the last one of an item wins, as in the labels store); embedded at the next sync."""
        n = 0
        for label in labels:
            entry = MemoryEntry.of(label)
            if self._entries.get(entry.item_id) != entry:
                self._entries[entry.item_id] = entry
                self.index.remove(entry.item_id)
                self._failed.pop(entry.item_id, None)
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._entries)

    def size(self, version: str) -> int:
        return len(self.index) if version == self._version else 0

    def sync(self, embedder: Embedder) -> int:
        if embedder.version != self._version:
            self.index.clear()
            self._failed.clear()
            self._version = embedder.version
        todo = [e for e in self._entries.values() if e.item_id not in self.index and e.item_id not in self._failed]
        for entry, result in zip(todo, embed_each(embedder, [e.text for e in todo])):
            if isinstance(result, str):
                log.warning("label %s stays out of the memory: %s", entry.item_id, result)
                self._failed[entry.item_id] = result
            else:
                self.index.put(entry, *result)
        return len(todo)

    def search(
        self, queries: Sequence[MemoryQuery], k: int, version: str, near_duplicate: float
    ) -> list[list[Neighbour]]:
        if version != self._version:
            return [[] for _ in queries]
        return self.index.search(queries, k, near_duplicate)

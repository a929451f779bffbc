"""The history store port: where scored items live, and what the scoring stage asks of it.

Two implementations pass the same contract tests: :class:`EmbeddedHistory` (in-process BM25 and
vectors, persistent on disk; the embedded default) and
:class:`monitor.elastic.history.ElasticsearchHistory` (production).

Leakage rules for related history, identical in both: only items published strictly before the
query item and within the look-back window; never the item itself or its near-duplicate group.
Items sharing a ticker with the query are preferred.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from monitor.errors import StoreUnavailable, check_disk_error
from monitor.jsonl import append_batch, dumps_line, read_objects
from monitor.schema import format_time, parse_stored_time

_TOKEN = re.compile(r"[\w]+", re.UNICODE)
TICKER_BOOST = 2.0
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True)
class HistoryQuery:
    id: str
    text: str
    published_at: datetime
    dedup_key: str
    tickers: tuple[str, ...] = ()
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Related:
    id: str
    score: float
    headline: str
    published_at: str


@dataclass(frozen=True)
class DedupQuery:
    id: str
    dedup_key: str
    published_at: datetime
    # Ids never to match besides the item's own: the rest of its batch with the same key, which the
    # caller resolves in batch order (a stored copy of one may come from an interrupted attempt).
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Original:
    """The earliest stored item with a query's dedup key: ordered as the stores rank them."""

    published_at: datetime
    id: str
    duplicate_of: str | None = None

    @property
    def root(self) -> str:
        """The id a duplicate of this item points at: the first of its group."""
        return self.duplicate_of or self.id


class HistoryStore(Protocol):
    def stored(self, ids: Sequence[str]) -> dict[str, dict]:
        """Documents already stored under these ids (id → document)."""

    def originals(self, queries: Sequence[DedupQuery], window: timedelta) -> list[Original | None]:
        """For each query, the earliest (published_at, id) stored item with the same dedup key within
        ±window, not the query's own id nor its excluded ids; None when there is none. Everything
        flushed before the call counts, however recently (read your own writes)."""

    def related(self, queries: Sequence[HistoryQuery], k: int, lookback: timedelta, method: str) -> list[list[Related]]:
        """For each query, up to k related earlier items (method: bm25, knn or both)."""

    def add(self, documents: Sequence[dict]) -> None:
        """Buffer documents (id = item id: writing one twice leaves one)."""

    def flush(self) -> dict[int, str]:
        """Make everything added durable, or raise StoreUnavailable (an outage: the batch is retried).
        Returns the documents refused for good, by position in the order added → the reason: a
        failure that belongs to one document, which the caller dead-letters."""


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens: close to Elasticsearch's standard analyzer for news text."""
    return [t.casefold() for t in _TOKEN.findall(text)]


class EmbeddedHistory:
    """An in-process history store: BM25 over headlines, exact vector search, JSONL on disk.

    >>> store = EmbeddedHistory()  # in memory; EmbeddedHistory(Path("state")) persists
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.docs: dict[str, dict] = {}
        self._pending: list[dict] = []
        self._order: list[str] = []
        self._postings: dict[str, dict[str, int]] = defaultdict(dict)
        self._lengths: dict[str, int] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._by_key: dict[str, dict[str, dict]] = defaultdict(dict)  # dedup key -> id -> document
        if folder is not None and (folder / "history.jsonl").exists():
            for doc in read_objects(folder / "history.jsonl"):
                self._put(doc)

    # --- writes ----------------------------------------------------------------------------------
    def add(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> dict[int, str]:
        pending, self._pending = self._pending, []  # a failed batch is replayed and added again
        if not pending:
            return {}
        lines, refused = [], {}
        for i, doc in enumerate(pending):
            try:
                line = dumps_line(doc)
            except (ValueError, TypeError, UnicodeError, RecursionError) as exc:  # as Elasticsearch refuses a document
                refused[i] = f"the embedded history refused the document: {type(exc).__name__}: {str(exc)[:300]}"
                continue
            lines.append(line)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                append_batch({self.folder / "history.jsonl": lines})
            except OSError as exc:
                check_disk_error(exc, f"the embedded history in {self.folder}")
                raise StoreUnavailable(f"cannot write the embedded history in {self.folder}: {exc.strerror}") from exc
        for i, doc in enumerate(pending):
            if i not in refused:
                self._put(doc)
        return refused

    def _put(self, doc: dict) -> None:
        doc_id = doc["id"]
        if doc_id in self.docs:
            self._unindex(doc_id)
        else:
            self._order.append(doc_id)
        self.docs[doc_id] = doc
        self._by_key[doc["dedup_key"]][doc_id] = doc
        counts = Counter(tokens(doc["headline"]))
        for term, count in counts.items():
            self._postings[term][doc_id] = count
        self._lengths[doc_id] = sum(counts.values())
        if doc.get("embedding") is not None:
            self._vectors[doc_id] = np.asarray(doc["embedding"], dtype=np.float32)

    def _unindex(self, doc_id: str) -> None:
        self._by_key[self.docs[doc_id]["dedup_key"]].pop(doc_id, None)
        for term in set(tokens(self.docs[doc_id]["headline"])):
            self._postings[term].pop(doc_id, None)
        self._vectors.pop(doc_id, None)

    # --- reads -----------------------------------------------------------------------------------
    def stored(self, ids: Sequence[str]) -> dict[str, dict]:
        return {i: self.docs[i] for i in ids if i in self.docs}

    def originals(self, queries: Sequence[DedupQuery], window: timedelta) -> list[Original | None]:
        out = []
        for q in queries:
            lo, hi, skip = (
                format_time(q.published_at - window),
                format_time(q.published_at + window),
                {q.id, *q.exclude},
            )
            found = [
                d
                for d in self._by_key.get(q.dedup_key, {}).values()
                if d["id"] not in skip and lo <= d["published_at"] <= hi
            ]
            first = min(found, key=lambda d: (d["published_at"], d["id"]), default=None)
            out.append(
                Original(parse_stored_time(first["published_at"]), first["id"], first.get("duplicate_of"))
                if first
                else None
            )
        return out

    def _allowed(self, doc: dict, q: HistoryQuery, since: str, until: str) -> bool:
        return doc["id"] != q.id and doc["dedup_key"] != q.dedup_key and since <= doc["published_at"] < until

    def related(self, queries: Sequence[HistoryQuery], k: int, lookback: timedelta, method: str) -> list[list[Related]]:
        return [self._related_one(q, k, lookback, method) for q in queries]

    def _related_one(self, q: HistoryQuery, k: int, lookback: timedelta, method: str) -> list[Related]:
        since, until = format_time(q.published_at - lookback), format_time(q.published_at)
        scores: dict[str, float] = defaultdict(float)
        if method in ("bm25", "both"):
            for doc_id, s in self._bm25(q).items():
                scores[doc_id] += s
        if method in ("knn", "both") and q.vector is not None:
            for doc_id, vec in self._vectors.items():
                scores[doc_id] += (1.0 + float(vec @ q.vector)) / 2.0  # Elasticsearch's cosine score
        ranked = []
        for doc_id, score in scores.items():
            doc = self.docs[doc_id]
            if not self._allowed(doc, q, since, until):
                continue
            if method in ("bm25", "both") and q.tickers and set(q.tickers) & set(doc.get("tickers") or ()):
                score += TICKER_BOOST
            ranked.append((score, doc["published_at"], doc_id))
        ranked.sort(key=lambda r: (-r[0], r[1], r[2]))
        return [Related(i, s, self.docs[i]["headline"], t) for s, t, i in ranked[:k]]

    def _bm25(self, q: HistoryQuery) -> dict[str, float]:
        n = len(self.docs)
        if n == 0:
            return {}
        avg = sum(self._lengths.values()) / n
        scores: dict[str, float] = defaultdict(float)
        for term in set(tokens(q.text)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for doc_id, tf in postings.items():
                norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * self._lengths[doc_id] / avg)
                scores[doc_id] += idf * tf * (BM25_K1 + 1) / norm
        return scores

"""The history store port: where scored items live, and what the scoring stage asks of it.

Two implementations pass the same contract tests: :class:`monitor.retrieval.embedded.EmbeddedHistory`
(SQLite, time-bounded BM25 and vectors; the embedded default) and
:class:`monitor.elastic.history.ElasticsearchHistory` (production).

Leakage rules for related history, identical in both: only items published strictly before the
query item and within the look-back window; never the item itself or its near-duplicate group.
Items sharing a ticker with the query are preferred.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

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

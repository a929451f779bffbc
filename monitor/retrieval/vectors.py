"""An in-process vector index over stored item representations, with bearwatch's leakage rules.

It is the embedded default's retrieval store and the labelled pool a model carries with it
(``history.npz`` in the model directory). Vectors are L2-normalised; similarity is the dot product.

Leakage rules, the same in training, evaluation and serving: a query never retrieves itself, an
item of its near-duplicate group, an item at least ``near_duplicate`` similar to it, or (when both
are dated) an item published at or after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NO_TIME = np.nan


@dataclass(frozen=True)
class Neighbour:
    """One retrieved item, as the model may use it."""

    id: str
    text: str
    score: float
    vector: np.ndarray | None = None  # its stored representation (fusion)
    sentiment: str | None = None  # its label or prediction, if known
    topic: str | None = None
    predicted: dict[str, tuple[float, ...]] | None = None  # the encoder's probabilities for it, per task (memory)

    def label(self, task: str) -> str | None:
        return self.sentiment if task == "sentiment" else self.topic if task == "topic" else None

    def probabilities(self, task: str) -> tuple[float, ...] | None:
        return (self.predicted or {}).get(task)


@dataclass(frozen=True)
class Query:
    vector: np.ndarray
    id: str | None = None
    group: str | None = None  # dedup key of the query text
    published_at: float = NO_TIME  # epoch seconds, NaN when unknown


class VectorIndex:
    """Exact top-k search over a few hundred thousand vectors (a matrix product per batch).

    >>> vectors = np.eye(2, dtype=np.float32)
    >>> idx = VectorIndex.build(["a", "b"], vectors, ["ga", "gb"], ["x", "y"], ["bearish", None], [None, None])
    >>> [n.id for n in idx.search([Query(np.array([1.0, 0.1], dtype=np.float32))], k=1)[0]]
    ['a']
    """

    def __init__(self, ids, vectors, groups, texts, sentiment, topic, published_at) -> None:
        self.ids = np.asarray(ids, dtype=object)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.groups = np.asarray(groups, dtype=object)
        self.texts = np.asarray(texts, dtype=object)
        self.sentiment = np.asarray(sentiment, dtype=object)
        self.topic = np.asarray(topic, dtype=object)
        self.published_at = np.asarray(published_at, dtype=np.float64)
        n = len(self.ids)
        if not (
            self.vectors.shape[0]
            == len(self.groups)
            == len(self.texts)
            == len(self.sentiment)
            == len(self.topic)
            == len(self.published_at)
            == n
        ):
            raise ValueError("all columns of a VectorIndex must have one row per item")
        self._row_of_id = {item_id: row for row, item_id in enumerate(self.ids)}

    @classmethod
    def build(cls, ids, vectors, groups, texts, sentiment, topic, published_at=None) -> VectorIndex:
        n = len(ids)
        times = (
            np.full(n, NO_TIME)
            if published_at is None
            else np.array([NO_TIME if t is None else t for t in published_at], dtype=np.float64)
        )
        return cls(ids, vectors, groups, texts, sentiment, topic, times)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: Sequence[Query], k: int, near_duplicate: float = 0.97) -> list[list[Neighbour]]:
        if not queries or len(self) == 0 or k == 0:
            return [[] for _ in queries]
        q = np.stack([np.asarray(x.vector, dtype=np.float32) for x in queries])
        scores = q @ self.vectors.T
        scores[scores >= near_duplicate] = -np.inf
        for row, query in enumerate(queries):
            self._mask_leaks(scores[row], query)
        take = min(k, len(self))
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        results = []
        for row in range(len(queries)):
            order = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            results.append(
                [self._neighbour(col, float(scores[row, col])) for col in order if np.isfinite(scores[row, col])]
            )
        return results

    def _mask_leaks(self, scores: np.ndarray, query: Query) -> None:
        if query.id is not None and (row := self._row_of_id.get(query.id)) is not None:
            scores[row] = -np.inf
        if query.group is not None:
            scores[self.groups == query.group] = -np.inf
        if not np.isnan(query.published_at):
            later = ~(self.published_at < query.published_at) & ~np.isnan(self.published_at)
            scores[later] = -np.inf

    def _neighbour(self, row: int, score: float) -> Neighbour:
        return Neighbour(
            id=str(self.ids[row]),
            text=str(self.texts[row]),
            score=score,
            vector=self.vectors[row],
            sentiment=self.sentiment[row],
            topic=self.topic[row],
        )

    # Stored as int8 (vectors are unit length, so 127 steps per unit lose ~0.4% of a cosine).
    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            ids=self.ids.astype(str),
            vectors=np.round(self.vectors * 127).astype(np.int8),
            groups=self.groups.astype(str),
            texts=self.texts.astype(str),
            sentiment=np.array(["" if s is None else s for s in self.sentiment]),
            topic=np.array(["" if t is None else t for t in self.topic]),
            published_at=self.published_at,
        )

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        with np.load(path, allow_pickle=False) as data:
            vectors = data["vectors"].astype(np.float32) / 127.0
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-6)
            return cls(
                data["ids"],
                vectors,
                data["groups"],
                data["texts"],
                [s or None for s in data["sentiment"].tolist()],
                [t or None for t in data["topic"].tolist()],
                data["published_at"],
            )

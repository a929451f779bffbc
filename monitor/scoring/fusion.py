"""Fusion of retrieved context in the head: neighbours' labels, weighted by similarity.

The encoder scores the item's text alone. For each head, the features are the head's own
logits, the log of the similarity-weighted label distribution of the k retrieved neighbours, and
how close the nearest neighbours are; a small multinomial logistic layer, fitted on examples the
encoder never trained on, turns them into the final logits. Neighbours cost one vector search and
no encoder time, because their representations were stored when they were scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.retrieval.vectors import Neighbour

_EPS = 1e-3


def neighbour_label_distribution(
    neighbours: Sequence[Sequence[Neighbour]], task: str, labels: Sequence[str], temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the similarity-weighted distribution of the neighbours' labels for `task`
    (zeros when no neighbour carries one) and [max similarity, mean similarity] of those neighbours."""
    index = {label: i for i, label in enumerate(labels)}
    dist = np.zeros((len(neighbours), len(labels)), dtype=np.float32)
    sims = np.zeros((len(neighbours), 2), dtype=np.float32)
    for row, items in enumerate(neighbours):
        labelled = [(n.score, index[getattr(n, task)]) for n in items if getattr(n, task) in index]
        if not labelled:
            continue
        scores = np.array([s for s, _ in labelled], dtype=np.float32)
        weights = np.exp((scores - scores.max()) / temperature)
        weights /= weights.sum()
        for w, (_, col) in zip(weights, labelled):
            dist[row, col] += w
        sims[row] = (scores.max(), scores.mean())
    return dist, sims


def fusion_features(
    logits: np.ndarray, label_dist: np.ndarray, sims: np.ndarray, use_context: bool = True
) -> np.ndarray:
    """The fusion layer's input. Without context it sees the logits alone (the control)."""
    if not use_context:
        return logits.astype(np.float32)
    return np.concatenate([logits, np.log(label_dist + _EPS), sims], axis=1).astype(np.float32)


@dataclass(frozen=True)
class FusionHead:
    """weight: [n_features, n_labels], bias: [n_labels]."""

    task: str
    labels: tuple[str, ...]
    weight: np.ndarray
    bias: np.ndarray
    temperature: float
    use_context: bool = True

    def logits(self, base_logits: np.ndarray, neighbours: Sequence[Sequence[Neighbour]]) -> np.ndarray:
        dist, sims = neighbour_label_distribution(neighbours, self.task, self.labels, self.temperature)
        return fusion_features(base_logits, dist, sims, self.use_context) @ self.weight + self.bias

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            task=self.task,
            labels=np.array(self.labels),
            weight=self.weight,
            bias=self.bias,
            temperature=self.temperature,
            use_context=self.use_context,
        )

    @classmethod
    def load(cls, path: str | Path) -> FusionHead:
        with np.load(path, allow_pickle=False) as d:
            return cls(
                str(d["task"]),
                tuple(d["labels"].tolist()),
                d["weight"],
                d["bias"],
                float(d["temperature"]),
                bool(d["use_context"]),
            )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class MemoryFusion:
    """How the retrieval memory (analysts' labels, embedded by the serving model) moves a score.

    For each head, the k nearest labelled items give two similarity-weighted distributions: their
    labels (what people said) and the encoder's own predictions for them (what the model says about
    them). The correction added to the item's logits is their log ratio, scaled by `strength` and
    gated on the nearest neighbour's similarity::

        logits + strength · gate(max sim) · (log(labels + ε) − log(predicted + ε))

    So the memory moves a score only where the model is known to be wrong near the item: on a base
    domain whose labels the encoder already fits, the two distributions agree and nothing moves; on
    a new domain whose labels disagree with the model the correction is that disagreement; with no
    neighbour (an empty memory, a head no label carries) the logits are returned unchanged.
    Constants are chosen on data (docs/training.md, "Retrieval memory").
    """

    k: int = 16
    temperature: float = 0.1
    strength: float = 2.0
    epsilon: float = 0.2
    threshold: float = 0.5  # similarity where the gate is half open
    slope: float = 20.0
    tasks: tuple[str, ...] = ("sentiment", "topic")
    # Labelled items at least this similar are taken for the item itself (its text with a URL or
    # case changed) and never used. Not the pool's 0.97: this encoder puts paraphrases of one kind
    # of news ("to open 40 new stores in Texas" / "35 new stores in Ohio") at 0.96-0.995, and those
    # are what analysts' labels are for. Same text after normalisation is excluded by its group.
    near_duplicate: float = 0.999
    # Neighbours less similar than this are dropped (their gate would be under 0.01): an unrelated
    # label neither moves a score nor is named among the labels an item used (context_ids).
    min_similarity: float = 0.27

    def __post_init__(self) -> None:
        if self.k < 1 or self.temperature <= 0 or self.strength < 0 or self.epsilon <= 0:
            raise ValueError(f"invalid memory fusion settings {self}")

    def logits(self, task: str, labels: Sequence[str], base_logits: np.ndarray, neighbours) -> np.ndarray:
        """`neighbours[i]`: item i's memory neighbours (Neighbour: label and the model's probabilities)."""
        if task not in self.tasks or not len(base_logits):
            return base_logits
        index = {label: i for i, label in enumerate(labels)}
        rows: list[int] = []
        cols: list[int] = []
        sims: list[float] = []
        predictions: list = []
        for row, items in enumerate(neighbours):
            taken = 0
            for n in items:
                label, p = n.label(task), n.probabilities(task)
                if label in index and p is not None:
                    rows.append(row)
                    cols.append(index[label])
                    sims.append(n.score)
                    predictions.append(p)
                    taken += 1
                    if taken == self.k:
                        break
        if not rows:
            return base_logits
        r, s = np.array(rows), np.array(sims, dtype=np.float64)
        n_items, n_labels = base_logits.shape
        nearest = np.full(n_items, -np.inf)
        np.maximum.at(nearest, r, s)
        weights = np.exp((s - nearest[r]) / self.temperature)
        total = np.zeros(n_items)
        np.add.at(total, r, weights)
        weights /= total[r]
        gold = np.zeros((n_items, n_labels))
        np.add.at(gold, (r, np.array(cols)), weights)
        predicted = np.zeros((n_items, n_labels))
        np.add.at(predicted, r, weights[:, None] * np.array(predictions, dtype=np.float64))
        gate = np.where(total > 0, _sigmoid(self.slope * (nearest - self.threshold)), 0.0)
        shift = np.log(gold + self.epsilon) - np.log(predicted + self.epsilon)
        return (base_logits + self.strength * gate[:, None] * shift).astype(base_logits.dtype)

    def to_json(self) -> dict:
        return {
            "k": self.k,
            "temperature": self.temperature,
            "strength": self.strength,
            "epsilon": self.epsilon,
            "threshold": self.threshold,
            "slope": self.slope,
            "tasks": list(self.tasks),
            "near_duplicate": self.near_duplicate,
            "min_similarity": self.min_similarity,
        }

    @classmethod
    def from_json(cls, doc: dict) -> MemoryFusion:
        return cls(
            k=int(doc["k"]),
            temperature=float(doc["temperature"]),
            strength=float(doc["strength"]),
            epsilon=float(doc["epsilon"]),
            threshold=float(doc.get("threshold", 0.5)),
            slope=float(doc.get("slope", 20.0)),
            tasks=tuple(doc.get("tasks", ("sentiment", "topic"))),
            near_duplicate=float(doc.get("near_duplicate", 0.999)),
            min_similarity=float(doc.get("min_similarity", 0.27)),
        )

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

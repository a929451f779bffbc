"""Stage 2: fit the fusion layer on items the encoder never trained on, and measure what context adds.

Validation items are split into grouped folds; each fold is predicted by a layer fitted on the
others (cross-fitting), so every figure here is out-of-sample. The control fits the same layer on
the head's logits alone: the difference between the two is what retrieved context adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monitor.retrieval.vectors import Neighbour
from monitor.scoring.fusion import (
    FusionHead,
    MemoryFusion,
    fusion_features,
    neighbour_label_distribution,
)
from monitor.scoring.metrics import classification_report


def fit_linear(
    features: np.ndarray, targets: np.ndarray, n_labels: int, l2: float = 1e-3, steps: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, full batch, L2-penalised."""
    torch.manual_seed(seed)
    x = torch.from_numpy(features)
    y = torch.from_numpy(targets).long()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
    xs = (x - mean) / std
    weight = torch.zeros(x.shape[1], n_labels, requires_grad=True)
    bias = torch.zeros(n_labels, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ weight + bias, y) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer: serving sees raw features
        w = weight / std.unsqueeze(1)
        b = bias - (mean.unsqueeze(0) @ w).squeeze(0)
    return w.numpy().astype(np.float32), b.numpy().astype(np.float32)


@dataclass
class FusionMeasurement:
    encoder_only: dict
    no_context: dict
    with_context: dict
    neighbour_vote: dict
    head: FusionHead  # fitted on all validation items, with context
    control_head: FusionHead  # fitted on all validation items, logits only


def _fold_of(groups: Sequence[str], folds: int, seed: int) -> np.ndarray:
    import hashlib

    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{seed}:{g}".encode(), digest_size=4).digest(), "big") % folds for g in groups]
    )


def measure_fusion(
    task: str,
    labels: Sequence[str],
    logits: np.ndarray,
    neighbours: Sequence[Sequence[Neighbour]],
    gold: Sequence[str],
    groups: Sequence[str],
    temperature: float,
    folds: int = 2,
    seed: int = 13,
) -> FusionMeasurement:
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[g] for g in gold])
    dist, sims = neighbour_label_distribution(neighbours, task, labels, temperature)
    fold = _fold_of(groups, folds, seed)

    def crossfit(use_context: bool) -> np.ndarray:
        feats = fusion_features(logits, dist, sims, use_context)
        predicted = np.zeros(len(y), dtype=int)
        for f in range(folds):
            w, b = fit_linear(feats[fold != f], y[fold != f], len(labels), seed=seed)
            predicted[fold == f] = (feats[fold == f] @ w + b).argmax(1)
        return predicted

    def report(predicted: np.ndarray) -> dict:
        return classification_report(list(gold), [labels[i] for i in predicted], labels)

    def full_head(use_context: bool) -> FusionHead:
        w, b = fit_linear(fusion_features(logits, dist, sims, use_context), y, len(labels), seed=seed)
        return FusionHead(task, tuple(labels), w, b, temperature, use_context)

    vote = np.where(dist.sum(1) > 0, dist.argmax(1), logits.argmax(1))
    return FusionMeasurement(
        encoder_only=report(logits.argmax(1)),
        no_context=report(crossfit(False)),
        with_context=report(crossfit(True)),
        neighbour_vote=report(vote),
        head=full_head(True),
        control_head=full_head(False),
    )


def measure_memory(
    memory_fusion: MemoryFusion,
    labels: Mapping[str, Sequence[str]],
    pool: Sequence,
    pool_out: dict[str, np.ndarray],
    valid: Sequence,
    valid_out: dict[str, np.ndarray],
) -> dict:
    """What the retrieval memory does on the model's own validation split when it holds the
    training split's labels (the base domains with the base memory, as a team that imported its
    training data would serve): accuracy and macro-F1 with and without it, per head. Through the
    serving code (MemoryIndex, MemoryFusion), with the encoder's outputs computed once."""
    from monitor.retrieval.memory import MemoryEntry, MemoryIndex, MemoryQuery

    index = MemoryIndex()
    for row, e in enumerate(pool):
        probabilities = {task: softmax(pool_out[task][row : row + 1])[0] for task in labels}
        index.put(
            MemoryEntry(e.id, e.text, e.sentiment, e.topic, None, e.group), pool_out["embedding"][row], probabilities
        )
    queries = [MemoryQuery(v, None, e.group) for v, e in zip(valid_out["embedding"], valid)]
    neighbours = index.search(queries, memory_fusion.k, memory_fusion.near_duplicate)
    out = {}
    for task, names in labels.items():
        rows = [i for i, e in enumerate(valid) if getattr(e, task)]
        if not rows:
            continue
        gold = [getattr(valid[i], task) for i in rows]
        logits = valid_out[task][rows]
        fused = memory_fusion.logits(task, names, logits, [neighbours[i] for i in rows])
        without = classification_report(gold, [names[i] for i in logits.argmax(1)], names)
        with_memory = classification_report(gold, [names[i] for i in fused.argmax(1)], names)
        out[task] = {
            "without": {k: without[k] for k in ("accuracy", "macro_f1", "n")},
            "with_memory": {k: with_memory[k] for k in ("accuracy", "macro_f1", "n")},
            "memory_items": len(pool),
        }
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits."""
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)

"""Classification metrics for one head: accuracy, macro-F1, per-class P/R/F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_report(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Metrics over `labels` (the head's label set, in its order).

    >>> r = classification_report(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    >>> round(r["accuracy"], 3), r["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
    """
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, predicted):
        confusion[index[g], index[p]] += 1
    n = int(confusion.sum())
    true_pos = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = np.divide(true_pos, predicted_count, out=np.zeros_like(true_pos), where=predicted_count > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    present = support > 0  # macro-F1 over the classes that occur in the gold labels
    return {
        "n": n,
        "accuracy": float(true_pos.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
    }

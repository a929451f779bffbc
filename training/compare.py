"""Models compared item by item on a recipe's own grouped validation split, with intervals.

`bearwatch compare --config RECIPE --model A --model B [--logits NAME=FILE]` scores every
validation text of the recipe (the split training holds out: same sources, seed and grouping)
with each model as it serves (ONNX, per item), or takes a teacher's validation logits kept by
`bearwatch distil-labels` (FILE.validation.jsonl). For each source and head it reports accuracy,
macro-F1 and, for sentiment, bearish precision and recall, each with a 95% bootstrap interval; and
for every model after the first, the paired difference to the first (the same resampled items for
both), whose interval says whether it wins beyond the noise: `models/default` is replaced only
when the candidate's lower bound is above zero on every head.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.labels import TASKS

RESAMPLES = 2000
BEARISH = "bearish"


@dataclass(frozen=True)
class Group:
    """The validation items of one source that carry one head's gold label."""

    source: str
    task: str
    rows: np.ndarray  # indices into the validation split
    gold: np.ndarray  # label indices


def _confusions(gold: np.ndarray, predicted: np.ndarray, classes: int, samples: np.ndarray) -> np.ndarray:
    """(resamples, classes, classes) confusion matrices of the resampled items."""
    codes = gold[samples] * classes + predicted[samples]
    flat = codes + (np.arange(len(samples))[:, None] * classes * classes)
    counts = np.bincount(flat.ravel(), minlength=len(samples) * classes * classes)
    return counts.reshape(len(samples), classes, classes)


def _metrics(confusion: np.ndarray, bearish: int | None) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (over the classes present in the gold labels) and, with `bearish`, that
    class's precision and recall, for each confusion matrix of a stack."""
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(float)
    support, called = confusion.sum(axis=2), confusion.sum(axis=1)
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    present = support > 0
    out = {
        "accuracy": tp.sum(axis=1) / confusion.sum(axis=(1, 2)),
        "macro_f1": (f1 * present).sum(axis=1) / np.maximum(1, present.sum(axis=1)),
    }
    if bearish is not None:
        out["bearish_precision"], out["bearish_recall"] = precision[:, bearish], recall[:, bearish]
    return out


def compare(
    groups: Sequence[Group], predictions: dict[str, dict[str, np.ndarray]], labels: Mapping[str, Sequence[str]]
) -> list[dict]:
    """One row per group and model: point figures, 95% intervals, and the paired difference to the
    first model. `predictions`: model name -> task -> predicted label index per validation item."""
    names = list(predictions)
    rows = []
    for g in groups:
        classes = len(labels[g.task])
        bearish = list(labels[g.task]).index(BEARISH) if g.task == "sentiment" else None
        rng = np.random.default_rng(13)  # the same resamples for every model: differences are paired
        samples = np.vstack([np.arange(len(g.rows)), rng.integers(0, len(g.rows), (RESAMPLES, len(g.rows)))])
        figures = {
            name: _metrics(_confusions(g.gold, predictions[name][g.task][g.rows], classes, samples), bearish)
            for name in names
        }
        for name in names:
            row: dict = {"source": g.source, "task": g.task, "n": len(g.rows), "model": name}
            for metric, values in figures[name].items():
                row[metric] = _with_interval(values)
                if name != names[0]:
                    row[metric]["minus_first"] = _with_interval(values - figures[names[0]][metric])
            rows.append(row)
    return rows


def _with_interval(values: np.ndarray) -> dict:
    """values[0]: the figure on the items themselves; values[1:]: on each resample."""
    low, high = np.percentile(values[1:], [2.5, 97.5])
    return {"value": round(float(values[0]), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def model_probabilities(
    model_dir: str, texts: Sequence[str], labels: Mapping[str, Sequence[str]]
) -> tuple[str, dict[str, np.ndarray]]:
    """A model's served probabilities (columns in the order of `labels`, per head) and its version."""
    from monitor.model_artifact import ModelArtifact
    from monitor.progress import Progress
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(Path(model_dir)), device="cpu")
    out: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
    with Progress(f"compare {scorer.version}", total=len(texts), unit="items") as progress:
        for start in range(0, len(texts), 1024):
            scores = scorer.score_texts(texts[start : start + 1024])
            for t in TASKS:
                out[t].append(scores.probabilities[t])
            progress.update(min(1024, len(texts) - start))
    order = {t: [list(scorer.labels[t]).index(label) for label in labels[t]] for t in TASKS}
    return scorer.version, {t: np.concatenate(v)[:, order[t]] for t, v in out.items()}


def logits_probabilities(path: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Probabilities from a file of validation logits by text key (`bearwatch distil-labels`)."""
    from training.distil import open_text, text_key
    from training.fusion import softmax

    logits = {}
    with open_text(path) as fh:
        for line in fh:
            row = json.loads(line)
            logits[row["key"]] = row
    missing = sum(text_key(t) not in logits for t in texts)
    if missing:
        raise SystemExit(f"{path} holds no logits for {missing} of {len(texts)} validation texts (another split?)")
    return {t: softmax(np.asarray([logits[text_key(x)][t] for x in texts], dtype=np.float64)) for t in TASKS}


def predictions(probabilities: dict[str, dict[str, np.ndarray]], average: bool = False) -> dict[str, dict]:
    """Each one's predicted label indices; with `average`, also those of the mean of all their
    probabilities (an ensemble: what a student distilled from them could at best approach)."""
    out = {name: {t: p[t].argmax(axis=1) for t in TASKS} for name, p in probabilities.items()}
    if average and len(probabilities) > 1:
        name = "average(" + ", ".join(probabilities) + ")"
        out[name] = {t: np.mean([p[t] for p in probabilities.values()], axis=0).argmax(axis=1) for t in TASKS}
    return out


def groups_of(valid, labels: Mapping[str, Sequence[str]]) -> list[Group]:
    groups = []
    for source in sorted({e.source for e in valid}):
        for task in TASKS:
            rows = [i for i, e in enumerate(valid) if e.source == source and getattr(e, task)]
            if rows:
                gold = np.asarray([list(labels[task]).index(getattr(valid[i], task)) for i in rows])
                groups.append(Group(source, task, np.asarray(rows), gold))
    return groups


def format_rows(rows: list[dict]) -> str:
    def cell(f: dict) -> str:
        text = f"{100 * f['value']:.1f} [{100 * f['ci95'][0]:.1f}, {100 * f['ci95'][1]:.1f}]"
        if "minus_first" in f:
            d = f["minus_first"]
            text += f" Δ {100 * d['value']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]"
        return text

    lines = []
    for r in rows:
        metrics = [m for m in ("accuracy", "macro_f1", "bearish_precision", "bearish_recall") if m in r]
        lines.append(
            f"{r['source']:<20} {r['task']:<9} n={r['n']:<5} {r['model']:<28} "
            + "  ".join(f"{m} {cell(r[m])}" for m in metrics)
        )
    return "\n".join(lines)

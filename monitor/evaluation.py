"""`bearwatch evaluate`: a model directory and a labelled file in, the head's metrics out.

Needs nothing but the model directory (its ONNX model, tokenizer and, for a model that retrieves
context, the labelled pool it retrieves from) and the file. Rows whose label is outside the head's
label set are counted and reported, never silently dropped.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from monitor.errors import UnknownLabel
from monitor.labelled_files import read_rows
from monitor.labels import TASKS, canonical_label
from monitor.labels_store import Label, read_label_file
from monitor.progress import Progress
from monitor.retrieval.memory import InProcessMemory
from monitor.scoring.metrics import classification_report
from monitor.scoring.onnx import OnnxScorer


def memory_labels(path: str | Path, task: str) -> tuple[list[Label], list[tuple[int, str]]]:
    """Labels for the retrieval memory from a CSV/JSONL file: `text,label` (the label of `task`),
    or the labels store's own columns (text plus sentiment and/or topic)."""
    return read_label_file(path, f"file:{Path(path).name}", label_task=task)


def evaluate_file(scorer: OnnxScorer, path: str | Path, task: str, memory: InProcessMemory | None = None) -> dict:
    """Metrics of `task` on a labelled file; with `memory`, its labels are the retrieval memory
    (as analysts' labels would be), never an item's own text or near-duplicate."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    texts, gold = [], []
    unknown: Counter[str] = Counter()
    unknown_lines: list[int] = []
    empty_lines: list[int] = []
    rows_total = 0
    for line_no, row in read_rows(path):
        rows_total += 1
        text = str(row.get("text") or "").strip()
        if not text:
            empty_lines.append(line_no)
            continue
        raw_label = str(row.get("label", ""))
        try:
            label = canonical_label(task, raw_label)
        except UnknownLabel:
            unknown[raw_label] += 1
            unknown_lines.append(line_no)
            continue
        texts.append(text)
        gold.append(label)
    used = 0
    if memory is not None and scorer.memory_k:
        memory.sync(scorer)
        used = memory.size(scorer.version)
    started = time.perf_counter()
    predicted: list[str] = []
    with Progress(f"evaluate {task}", total=len(texts), unit="items") as progress:
        for start in range(0, len(texts), 1024):  # each item is scored alone: chunks change no score
            chunk = texts[start : start + 1024]
            if used:
                raw = scorer.encode(chunk)
                neighbours = scorer.search_memory(memory, chunk, raw["item_embedding"])
                scores = scorer.finish(chunk, raw, None, neighbours)
            else:
                scores = scorer.score_texts(chunk)
            predicted += scores.predicted(task)
            progress.update(len(chunk))
    seconds = time.perf_counter() - started
    report = classification_report(gold, predicted, scorer.labels[task])
    report.update(
        task=task,
        model_version=scorer.version,
        context_mode=scorer.settings.mode if task in scorer.fusion else "none",
        memory_items=used,
        memory_fusion=scorer.memory_fusion is not None,
        onnx_provider=scorer.provider,
        rows_total=rows_total,
        unknown_labels=dict(unknown),
        unknown_label_lines=unknown_lines[:50],
        empty_text_lines=empty_lines[:50],
        scoring_seconds=round(seconds, 3),
        items_per_s=round(len(texts) / seconds, 1) if seconds > 0 else None,
    )
    return report


def format_report(report: dict) -> str:
    lines = [
        f"model {report['model_version']} · task {report['task']} · context {report['context_mode']} · "
        f"memory {report['memory_items']} labelled items · {report['onnx_provider']}",
        f"rows {report['rows_total']}, evaluated {report['n']}"
        + (
            f", label outside the set: {sum(report['unknown_labels'].values())} "
            f"({', '.join(f'{k!r}×{v}' for k, v in report['unknown_labels'].items())})"
            if report["unknown_labels"]
            else ""
        )
        + (f", empty text: {len(report['empty_text_lines'])}" if report["empty_text_lines"] else ""),
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   ({report['items_per_s']} items/s)",
        "",
        f"{'class':<28} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
    ]
    for label, m in report["per_class"].items():
        lines.append(f"{label:<28} {m['precision']:>9.3f} {m['recall']:>9.3f} {m['f1']:>9.3f} {m['support']:>8}")
    lines += ["", "confusion matrix (rows: gold, columns: predicted, in the order above)"]
    lines += [" ".join(f"{v:>5}" for v in row) for row in report["confusion_matrix"]]
    return "\n".join(lines)

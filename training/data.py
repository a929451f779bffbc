"""Labelled data: loading (CSV `text,label` and JSONL), label mapping, grouped splitting.

An example may carry a topic label, a sentiment label, or both; a head whose label is missing
contributes no loss for it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monitor.errors import UnknownLabel
from monitor.labelled_files import read_rows
from monitor.labels import canonical_label
from monitor.text import dedup_key


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    topic: str | None = None
    sentiment: str | None = None
    source: str = ""
    published_at: str | None = None  # RFC 3339 when known; undated examples are timeless

    @property
    def group(self) -> str:
        """Near-duplicates share a group and never straddle a split."""
        return dedup_key(self.text)


@dataclass
class LoadReport:
    path: str
    rows: int = 0
    kept: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


@dataclass(frozen=True)
class DataSource:
    """One labelled file and what its `label` column means."""

    path: str
    task: str  # "topic" or "sentiment": which head the file's label belongs to
    name: str = ""
    overrides: bool = False  # its labels replace earlier sources' labels of the same (near-duplicate) text

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


def load_source(source: DataSource) -> tuple[list[Example], LoadReport]:
    """Read one file; rows with an empty text or a label outside the task's set are reported."""
    path = Path(source.path)
    report = LoadReport(str(path))
    examples: list[Example] = []
    for line_no, row in read_rows(path):
        report.rows += 1
        text = (row.get("text") or "").strip()
        if not text:
            report.rejected.append((line_no, "empty text"))
            continue
        try:
            label = canonical_label(source.task, str(row.get("label", "")))
        except UnknownLabel as exc:
            report.rejected.append((line_no, str(exc)))
            continue
        digest = hashlib.sha1(f"{source.label}:{line_no}:{text}".encode()).hexdigest()[:16]
        examples.append(Example(id=f"{source.label}:{digest}", text=text, source=source.label, **{source.task: label}))
    report.kept = len(examples)
    return examples, report


def grouped_split(examples: Sequence[Example], valid_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split by near-duplicate group: all members of a group land on the same side.

    Groups are assigned by a seeded hash of the group key, so the split is stable when examples
    are added or reordered.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError("valid_fraction must be between 0 and 1")
    threshold = int(valid_fraction * 2**32)
    train: list = []
    valid: list = []
    for example in examples:
        bucket = int.from_bytes(hashlib.blake2b(f"{seed}:{example.group}".encode(), digest_size=4).digest(), "big")
        (valid if bucket < threshold else train).append(example)
    return train, valid


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shuffled(items: Sequence, seed: int) -> list:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out

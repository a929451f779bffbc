"""Reading labelled files (CSV with `text,label` columns, or JSONL objects with those keys)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path


class LabelledFileError(ValueError):
    """A labelled file that cannot be read as CSV/JSONL with text and label."""


def read_rows(path: str | Path, required: tuple[str, ...] = ("text", "label")) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) pairs. JSONL: one object per non-blank line; CSV: a header row
    that names at least the `required` columns."""
    path = Path(path)
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LabelledFileError(f"{path}:{line_no}: not JSON: {exc}") from exc
                if not isinstance(row, dict):
                    raise LabelledFileError(f"{path}:{line_no}: expected a JSON object")
                yield line_no, row
        return
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not set(required) <= set(reader.fieldnames):
            raise LabelledFileError(f"{path}: the CSV needs a header with {' and '.join(required)} columns (got {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, row

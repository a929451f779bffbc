"""Reading labelled files (CSV with `text,label` columns, or JSONL objects with those keys)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from monitor.errors import LabelledFileError


def read_rows(
    path: str | Path, required: tuple[str, ...] = ("text", "label"), bad_rows: list | None = None
) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) pairs. JSONL: one object per non-blank line; CSV: a header row
    that names at least the `required` columns.

    A row with bytes that are not UTF-8 raises :class:`LabelledFileError`, or, when `bad_rows` is
    a list, is skipped and recorded there as (line, reason) so the rest of the file is still read."""
    path = Path(path)

    def undecodable(line_no: int, raw) -> bool:  # surrogateescape turns each bad byte into U+DC80..U+DCFF
        text = raw if isinstance(raw, str) else " ".join(map(str, raw.values()))
        if any("\udc80" <= c <= "\udcff" for c in text):
            reason = "not UTF-8 (undecodable bytes)"
            if bad_rows is None:
                raise LabelledFileError(f"{path}:{line_no}: {reason}")
            bad_rows.append((line_no, reason))
            return True
        return False

    if path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8", errors="surrogateescape") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip() or undecodable(line_no, line):
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LabelledFileError(f"{path}:{line_no}: not JSON: {exc}") from exc
                if not isinstance(row, dict):
                    raise LabelledFileError(f"{path}:{line_no}: expected a JSON object")
                yield line_no, row
        return
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not set(required) <= set(reader.fieldnames):
            raise LabelledFileError(
                f"{path}: the CSV needs a header with {' and '.join(required)} columns (got {reader.fieldnames})"
            )
        for row in reader:
            if not undecodable(reader.line_num, row):
                yield reader.line_num, row

"""Append-only JSON-lines files that never keep half a batch: the embedded default's outputs and
history. A batch is appended whole or, when a write fails (disk full, a file-size limit), every file
it touched is cut back to where it was, so the replayed batch does not duplicate or tear lines. A
process killed mid-write can still leave a torn last line; readers drop it (it was never committed)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger("bearwatch.jsonl")


_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def dumps_line(value) -> str:
    """One JSON line: non-ASCII kept readable, but what could split or break the line for a reader
    escaped: the Unicode line separators a str.splitlines() cuts at, and a lone surrogate (not
    writable as UTF-8; as a JSON escape it reads back as it was). Raises what json.dumps raises."""
    line = json.dumps(value, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    for char, escape in _SEPARATORS.items():
        if char in line:  # only inside strings: json.dumps writes no such character elsewhere
            line = line.replace(char, escape)
    return line


def append_batch(lines_by_file: Mapping[Path, Iterable[str]]) -> None:
    """Append each file's lines (without newlines); all or nothing per batch. Raises OSError."""
    sizes: dict[Path, int] = {}
    try:
        for path, lines in lines_by_file.items():
            sizes[path] = path.stat().st_size if path.exists() else 0
            with path.open("a", encoding="utf-8") as fh:
                for line in lines:
                    fh.write(line + "\n")
    except OSError:
        for path, size in sizes.items():
            try:
                os.truncate(path, size)
            except OSError as undo:  # reported, and the original error still raised
                log.error("could not cut %s back to %d bytes after a failed write: %s", path, size, undo)
        raise


def read_objects(path: Path) -> Iterator[dict]:
    """The objects of a JSON-lines file; a torn last line (a write cut short) is dropped and cut off."""
    good = 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                log.warning("%s ends with an incomplete line (%d bytes, a write cut short): dropped", path, len(raw))
                break
            good += len(raw)
            if raw.strip():
                yield json.loads(raw)
    if good != path.stat().st_size:
        os.truncate(path, good)

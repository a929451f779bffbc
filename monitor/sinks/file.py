"""File publisher for the embedded default: one JSON line per record, by topic, in a folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from monitor.errors import SinkUnavailable, check_disk_error
from monitor.jsonl import append_batch, dumps_line
from monitor.sinks.base import Record


class FilePublisher:
    """`taps`: topics whose records are also handed, once written, to an in-process reader (the
    embedded default's detection stage reads the scored topic so)."""

    def __init__(self, folder: Path, taps: dict | None = None) -> None:
        self.folder = folder
        self.taps = taps or {}
        self._pending: list[Record] = []

    def add(self, record: Record) -> None:
        self._pending.append(record)

    def flush(self) -> list[tuple[Record, str]]:
        pending, self._pending = self._pending, []  # a failed batch is replayed and added again
        if not pending:
            return []
        lines: dict[Path, list[str]] = {}
        for record in pending:
            if record.is_control:
                continue  # control records only go to the in-process reader (taps): the files hold items
            lines.setdefault(self.folder / f"{record.topic}.jsonl", []).append(dumps_line(self._line(record)))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            append_batch(lines)  # all or nothing: a replayed batch neither duplicates nor tears lines
        except OSError as exc:
            check_disk_error(exc, f"the outputs in {self.folder}")
            raise SinkUnavailable(f"cannot write to {self.folder}: {exc.strerror}") from exc
        for record in pending:
            if record.topic in self.taps:
                self.taps[record.topic].append(record)
        return []

    @staticmethod
    def _line(record: Record) -> dict:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        try:
            value = json.loads(record.value)
            dumps_line(value)  # it must also write back out (a deep nest, a lone surrogate)
        except (ValueError, RecursionError):  # a dead letter keeps the original bytes, whatever they are
            value = {"base64": base64.b64encode(record.value).decode()}
        return {
            "key": record.key.decode("utf-8", "replace") if record.key else None,
            "headers": headers,
            "value": value,
        }

    def close(self) -> None:
        pass

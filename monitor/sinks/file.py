"""File publisher for the embedded default: one JSON line per record, by topic, in a folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from monitor.sinks.base import Record
from monitor.sinks.kafka import SinkUnavailable


class FilePublisher:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: list[Record] = []

    def add(self, record: Record) -> None:
        self._pending.append(record)

    def flush(self) -> None:
        pending, self._pending = self._pending, []  # a failed batch is replayed and added again
        if not pending:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handles = {}
            try:
                for record in pending:
                    fh = handles.get(record.topic) or handles.setdefault(record.topic, (self.folder / f"{record.topic}.jsonl").open("a", encoding="utf-8"))
                    fh.write(json.dumps(self._line(record), ensure_ascii=False) + "\n")
            finally:
                for fh in handles.values():
                    fh.close()
        except OSError as exc:
            raise SinkUnavailable(f"cannot write to {self.folder}: {exc.strerror}") from exc

    @staticmethod
    def _line(record: Record) -> dict:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        try:
            value = json.loads(record.value)
        except ValueError:  # a dead letter keeps the original bytes, whatever they are
            value = {"base64": base64.b64encode(record.value).decode()}
        return {"key": record.key.decode("utf-8", "replace") if record.key else None, "headers": headers, "value": value}

    def close(self) -> None:
        pass

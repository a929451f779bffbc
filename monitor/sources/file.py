"""File/stdin source for the embedded default: one news item per line (JSONL).

Offsets are line numbers; a commit records them in a small state file, so a restarted demo resumes
where it stopped, like a consumer group does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from monitor.errors import SourceUnavailable, check_disk_error
from monitor.sources.base import Message


class FileSource:
    def __init__(self, path: str | None, state_file: Path | None = None) -> None:
        self.name = path or "-"
        self._fh = sys.stdin.buffer if path in (None, "-") else open(path, "rb")
        self.state_file = state_file
        self._line = 0
        self._eof = False
        start = self._committed()
        while self._line < start and self._fh.readline():
            self._line += 1

    def _committed(self) -> int:
        if self.state_file and self.state_file.exists():
            return int(json.loads(self.state_file.read_text()).get("next_line", 0))
        return 0

    def partition_count(self, topic: str) -> int:
        return 1  # a file is one ordered partition

    def lag(self) -> int | None:
        """0 once the end of the file was reached; before that, unknown (it is not counted ahead)."""
        return 0 if self._eof else None

    def partition_lags(self) -> dict[tuple[str, int], int] | None:
        return {(self.name, 0): 0} if self._eof else None

    def has_assignment(self) -> bool:
        return True

    def caught_up_partitions(self) -> list[tuple[tuple[str, int], int]]:
        """At the end of the file: its one partition is read to the end."""
        return [((self.name, 0), self._line)] if self._eof else []

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = []
        while len(messages) < max_records:
            raw = self._fh.readline()
            if not raw:
                self._eof = True
                break
            value = raw.rstrip(b"\r\n")
            if value.strip():
                messages.append(Message(self.name, 0, self._line, value))
            self._line += 1
        return messages

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        if self.state_file and next_offsets:
            tmp = self.state_file.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps({"source": self.name, "next_line": max(next_offsets.values())}))
                tmp.replace(self.state_file)
            except OSError as exc:
                check_disk_error(exc, f"the offsets in {self.state_file}")
                raise SourceUnavailable(f"cannot record the offsets in {self.state_file}: {exc.strerror}") from exc

    @property
    def replayable(self) -> bool:
        return self._fh is not sys.stdin.buffer

    def rewind(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        if self._fh is sys.stdin.buffer:
            raise RuntimeError("standard input cannot be replayed")
        self._fh.close()
        self._fh = open(self.name, "rb")
        self._line = 0
        self._eof = False
        start = min(first_offsets.values())
        while self._line < start and self._fh.readline():
            self._line += 1

    def close(self) -> None:
        if self._fh is not sys.stdin.buffer:
            self._fh.close()

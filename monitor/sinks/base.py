"""The publisher port: records buffered on add(), made durable on flush() (or an error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Publisher(Protocol):
    def add(self, record: Record) -> None: ...

    def flush(self) -> None:
        """Every added record accepted by its destination, or raise SinkUnavailable."""

    def close(self) -> None: ...

"""The publisher port: records buffered on add(), made durable on flush() (or an error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


# The key of a control record on the scored topic: a scoring instance says it has read a news
# partition to its end (the detection stage's event-time watermark). Not a scored item.
WATERMARK_KEY = b"bearwatch.watermark"


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

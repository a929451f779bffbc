"""The publisher port: records buffered on add(), made durable on flush() (or an error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# The header of a control record on the scored topic: a scoring instance says it has read a news
# partition to its end (the detection stage's event-time watermark). Not a scored item.
WATERMARK_HEADER = ("bearwatch.control", b"watermark")


def source_key(topic: str, partition: int) -> bytes:
    """The scored topic's record key: the news partition an item came from. Every record of one
    news partition (items and its caught-up marks) lands in one scored partition, in order, which is
    what the detection stage's per-partition watermark relies on, however many partitions it has."""
    return f"{topic}/{partition}".encode()


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def is_control(self) -> bool:
        return WATERMARK_HEADER in self.headers


class Publisher(Protocol):
    def add(self, record: Record) -> None: ...

    def flush(self) -> list[tuple[Record, str]]:
        """Every added record accepted by its destination, or raise SinkUnavailable (an outage).
        Returns the records refused for good (too large, invalid), each with the reason: the caller
        dead-letters what they stood for."""

    def close(self) -> None: ...

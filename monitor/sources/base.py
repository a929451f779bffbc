"""The source port: messages in, offsets committed only when told."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None


class Source(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to max_records messages (possibly none)."""

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Record that everything before these offsets is done."""

    def rewind(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        """Deliver again from these offsets (a batch whose writes failed)."""

    def close(self) -> None: ...


def batch_offsets(messages: list[Message]) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(first offset, next offset to commit) per partition of a batch."""
    first: dict[tuple[str, int], int] = {}
    nxt: dict[tuple[str, int], int] = {}
    for m in messages:
        tp = (m.topic, m.partition)
        first[tp] = min(first.get(tp, m.offset), m.offset)
        nxt[tp] = max(nxt.get(tp, 0), m.offset + 1)
    return first, nxt


def caught_up(source) -> bool:
    """Whether an empty poll means the end of the input: the source says nothing is left to read.
    An unreachable broker also polls empty, but cannot say, and that is not the end."""
    return not hasattr(source, "lag") or source.lag() == 0

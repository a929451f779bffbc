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
    """The scoring stage's input (the news topic): partitions, read in order, committed when told."""

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to max_records messages (possibly none)."""

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Record that everything before these offsets is done."""

    def rewind(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        """Deliver again from these offsets (a batch whose writes failed)."""

    @property
    def replayable(self) -> bool:
        """Whether `rewind` can deliver again (standard input cannot): only then is a batch polled ahead."""

    def lag(self) -> int | None:
        """Messages left to read (0: at the end for now), or None when it cannot say (a broker down)."""

    def partition_lags(self) -> dict[tuple[str, int], int] | None:
        """The same by (topic, partition), for the lag metric; None when it cannot say."""

    def has_assignment(self) -> bool:
        """Whether it has partitions to read (False while a consumer group rebalances: idle time
        does not count then)."""

    def partition_count(self, topic: str) -> int:
        """How many partitions a topic has (scored records carry it, for the detector's watermark)."""

    def caught_up_partitions(self) -> list[tuple[tuple[str, int], int]]:
        """The partitions read to their end, each with its end offset: ((topic, partition), end)."""

    def close(self) -> None: ...


class TopicReader(Protocol):
    """The detection stage's input (the scored topic): every partition, from offsets it is given
    (they live in the stage's snapshot)."""

    topic: str

    def start(self, offsets: Mapping[int, int]) -> None:
        """Read from these offsets (by partition; the beginning for the others)."""

    def poll(self, max_records: int, timeout_s: float) -> list[Message]: ...

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None: ...

    def lag(self) -> int | None: ...

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


def caught_up(source: Source | TopicReader) -> bool:
    """Whether an empty poll means the end of the input: the source says nothing is left to read.
    An unreachable broker also polls empty, but cannot say (None), and that is not the end."""
    return source.lag() == 0

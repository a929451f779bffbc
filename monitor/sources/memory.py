"""A topic held in memory: what the embedded default's publisher wrote to its scored topic, read
back by the production detection stage, as the detector reads the scored topic from Kafka."""

from __future__ import annotations

from collections.abc import Mapping

from monitor.sinks.base import Record
from monitor.sources.base import Message


class MemoryTopic:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._records: list[Record] = []
        self._base = 0  # offset of _records[0]: records before the last commit are dropped
        self._next = 0

    def append(self, record: Record) -> None:
        self._records.append(record)

    def start(self, offsets: Mapping[int, int]) -> None:
        self._next = offsets.get(0, self._base)

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        begin = self._next - self._base
        taken = self._records[begin : begin + max_records]
        messages = [Message(self.topic, 0, self._next + i, r.value, r.key) for i, r in enumerate(taken)]
        self._next += len(messages)
        return messages

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        done = next_offsets.get((self.topic, 0), self._base) - self._base
        if done > 0:  # bounded memory: what the stage has committed is not needed again
            del self._records[:done]
            self._base += done

    def lag(self) -> int:
        return self._base + len(self._records) - self._next

    def close(self) -> None:
        pass

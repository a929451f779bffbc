"""Kafka source: a kafka-python consumer in a group, offsets committed explicitly after writes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from monitor.errors import SourceUnavailable
from monitor.settings import KafkaSettings
from monitor.sources.base import Message

log = logging.getLogger("bearwatch.kafka")


def ensure_topics(settings: KafkaSettings, topics: list[str], partitions: int | None = None) -> None:
    """Create missing topics (``kafka.create_topics``; production manifests turn it off and create
    them on purpose), each with ``kafka.replication_factor`` replicas.

    The scored topic is created with one partition: the detection stage reads it as one ordered
    log, which is what makes a replay of it give the same alerts. A broker that refuses (too few
    brokers for the replication factor, no permission) ends start-up with its reason.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(client_id="bearwatch-admin", **settings.client_options())
    except KafkaError as exc:
        raise SourceUnavailable(f"no Kafka broker answered at {settings.bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=partitions or (1 if t == settings.scored_topic else settings.partitions),
                            replication_factor=settings.replication_factor,
                        )
                        for t in missing
                    ]
                )
                log.info("created topics %s", ", ".join(missing))
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise SourceUnavailable(f"Kafka admin request failed: {exc}") from exc
    finally:
        admin.close()


class _ConsumerReads:
    """What both Kafka readers do the same way with their consumer: connect, poll, commit, lag,
    close. Their constructors only keep settings; `start` connects."""

    consumer: Any = None

    def _connect(self, settings: KafkaSettings, *topics: str, **options: Any) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            self.consumer = KafkaConsumer(*topics, **options, **settings.client_options())
        except KafkaError as exc:
            raise SourceUnavailable(f"cannot connect to Kafka at {settings.bootstrap}: {exc}") from exc

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        from kafka.errors import KafkaError

        try:
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise SourceUnavailable(f"Kafka poll failed: {exc}") from exc
        messages = [
            Message(r.topic, r.partition, r.offset, r.value, r.key, r.timestamp)
            for records in polled.values()
            for r in records
        ]
        messages.sort(key=lambda m: (m.topic, m.partition, m.offset))
        return messages

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import KafkaError

        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in next_offsets.items()}
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # CommitFailedError after a rebalance: the new owner replays the batch; writes are idempotent.
            raise SourceUnavailable(f"Kafka commit failed: {exc}") from exc

    def lag(self) -> int | None:
        """Messages behind the end of the assigned partitions, or None when unknown."""
        lags = self.partition_lags()
        return None if lags is None else sum(lags.values())

    def partition_lags(self) -> dict[tuple[str, int], int] | None:
        """Messages behind the end of each assigned partition, or None when unknown."""
        from kafka.errors import KafkaError

        try:
            assigned = list(self.consumer.assignment())
            if not assigned:
                return {}
            ends = self.consumer.end_offsets(assigned, timeout_ms=2000)  # a down broker must not stall the loop
            return {(tp.topic, tp.partition): max(0, ends[tp] - self.consumer.position(tp)) for tp in assigned}
        except KafkaError as exc:  # lag is informational (a rebalance, a slow broker): never stop scoring for it
            log.info("consumer lag unknown for now: %s", exc)
            return None

    def close(self) -> None:
        if self.consumer is not None:  # never started: nothing to close
            self.consumer.close(autocommit=False)


class KafkaSource(_ConsumerReads):
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str | None = None,
        group: str | None = None,
        client_id: str = "bearwatch-monitor",
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.news_topic
        self.group = group or settings.group
        self.client_id = client_id
        self._partitions: dict[str, int] = {}

    def start(self) -> KafkaSource:
        """Connect and join the consumer group on the topic (SourceUnavailable when no broker
        answers); returns the source."""
        self._connect(
            self.settings,
            self.topic,
            group_id=self.group,
            client_id=self.client_id,
            enable_auto_commit=False,  # offsets are committed after the batch's writes, never on a timer
            auto_offset_reset="earliest",
            max_poll_interval_ms=600_000,
        )
        return self

    replayable = True

    def rewind(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        from kafka import TopicPartition

        assigned = self.consumer.assignment()
        for (t, p), offset in first_offsets.items():
            tp = TopicPartition(t, p)
            if tp in assigned:  # a partition revoked meanwhile is replayed by its new owner
                self.consumer.seek(tp, offset)

    def partition_count(self, topic: str) -> int:
        """How many partitions a topic has (cached: scored records carry it for the watermark)."""
        if topic not in self._partitions:
            self._partitions[topic] = len(self.consumer.partitions_for_topic(topic) or ()) or 1
        return self._partitions[topic]

    def caught_up_partitions(self) -> list[tuple[tuple[str, int], int]]:
        """Assigned partitions read to their end: ((topic, partition), end offset) each."""
        from kafka.errors import KafkaError

        try:
            assigned = list(self.consumer.assignment())
            if not assigned:
                return []
            ends = self.consumer.end_offsets(assigned, timeout_ms=2000)
            return [((tp.topic, tp.partition), ends[tp]) for tp in assigned if self.consumer.position(tp) >= ends[tp]]
        except KafkaError as exc:  # asked again at the next idle poll
            log.info("partition ends unknown for now: %s", exc)
            return []

    def has_assignment(self) -> bool:
        """False while the group is still (re)balancing: idle time does not count then."""
        return bool(self.consumer.assignment())


class KafkaTopicReader(_ConsumerReads):
    """Every partition of one topic, assigned by hand (no rebalancing), from offsets it is given.

    For the detection stage, whose state spans all partitions and carries its own offsets; it still
    commits them under its group so lag shows up in the usual tools.
    """

    def __init__(self, settings: KafkaSettings, topic: str, group: str, client_id: str = "bearwatch-detect") -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.client_id = client_id

    def start(self, offsets: Mapping[int, int]) -> None:
        import time

        from kafka import TopicPartition

        self._connect(
            self.settings, group_id=self.group, client_id=self.client_id, enable_auto_commit=False,
            auto_offset_reset="earliest",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        partitions = self.consumer.partitions_for_topic(self.topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise SourceUnavailable(f"topic {self.topic} has no partitions (does it exist?)")
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        for tp in assigned:
            if tp.partition in offsets:
                self.consumer.seek(tp, offsets[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)

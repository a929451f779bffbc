"""The real Kafka broker: produce, consume, and resume a consumer group at its committed offset."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

pytestmark = pytest.mark.services


@pytest.fixture
def topic(kafka_bootstrap: str, unique_name: str):
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="bw-test-admin")
    admin.create_topics([NewTopic(unique_name, num_partitions=1, replication_factor=1)])
    yield unique_name
    admin.delete_topics([unique_name])
    admin.close()


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [producer.send(topic, value=v, key=str(i).encode()) for i, v in enumerate(values)]
    producer.flush(timeout=30)
    for future in futures:
        future.get(timeout=30)  # raises if the broker did not accept the record
    producer.close()


def consume(consumer: KafkaConsumer, want: int, timeout_ms: int = 20_000) -> list:
    """Poll until `want` records arrived or the time is up; returns what arrived."""
    import time

    records: list = []
    deadline = time.monotonic() + timeout_ms / 1000
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=want - len(records)).values():
            records.extend(batch)
    return records


def group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def test_produce_and_consume_round_trip(kafka_bootstrap: str, topic: str) -> None:
    values = [f"news item {i}".encode() for i in range(20)]
    produce(kafka_bootstrap, topic, values)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    records = consume(consumer, want=20)
    consumer.close()

    assert [r.value for r in records] == values
    assert [r.offset for r in records] == list(range(20))


def test_consumer_group_resumes_at_committed_offset(kafka_bootstrap: str, topic: str, unique_name: str) -> None:
    values = [f"item {i}".encode() for i in range(10)]
    produce(kafka_bootstrap, topic, values)
    group = f"{unique_name}-group"

    first = group_consumer(kafka_bootstrap, topic, group)
    got = consume(first, want=4)
    assert [r.value for r in got] == values[:4]
    first.commit()  # commits the position after the 4 records handed out
    first.close()

    second = group_consumer(kafka_bootstrap, topic, group)
    rest = consume(second, want=6)
    committed = second.committed(TopicPartition(topic, 0))
    second.close()

    assert committed == 4
    assert [r.value for r in rest] == values[4:]


def test_topics_are_created_with_the_configured_replication_and_a_refusal_is_explained(
    kafka_bootstrap: str, unique_name: str
) -> None:
    from monitor.errors import SourceUnavailable
    from monitor.settings import KafkaSettings
    from monitor.sources.kafka import ensure_topics

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="bw-test-admin")
    try:
        # One local broker: a replication factor of 2 cannot be met, and start-up must say so.
        with pytest.raises(SourceUnavailable, match="(?i)replication"):
            ensure_topics(KafkaSettings(bootstrap=kafka_bootstrap, replication_factor=2), [f"{unique_name}-r2"])
        assert f"{unique_name}-r2" not in admin.list_topics()
        ensure_topics(KafkaSettings(bootstrap=kafka_bootstrap, replication_factor=1, partitions=2), [unique_name])
        (described,) = admin.describe_topics([unique_name])
        assert len(described["partitions"]) == 2
        assert {len(p["replica_nodes"]) for p in described["partitions"]} == {1}
        admin.delete_topics([unique_name])
    finally:
        admin.close()


def test_the_publisher_is_idempotent(kafka_bootstrap: str, topic: str) -> None:
    from monitor.settings import KafkaSettings
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher

    publisher = KafkaPublisher(KafkaSettings(bootstrap=kafka_bootstrap))
    try:
        assert publisher.producer.config["enable_idempotence"] is True
        publisher.add(Record(topic, b"v", b"k"))
        publisher.flush()
        # The broker handed this producer an id: retried batches are deduplicated by (id, sequence).
        assert publisher.producer._transaction_manager.producer_id_and_epoch.producer_id >= 0
    finally:
        publisher.close()

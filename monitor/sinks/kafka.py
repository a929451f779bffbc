"""Kafka publisher (scored topic and dead-letter topic) with acks=all and idempotence."""

from __future__ import annotations

from monitor.errors import BearwatchError
from monitor.settings import KafkaSettings
from monitor.sinks.base import Record


class SinkUnavailable(BearwatchError):
    """A destination did not accept what was written to it."""


class KafkaPublisher:
    def __init__(self, settings: KafkaSettings, client_id: str = "bearwatch-publisher", flush_timeout_s: float = 30.0) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self.producer = KafkaProducer(
                client_id=client_id,
                acks="all",
                linger_ms=5,
                retries=5,
                max_in_flight_requests_per_connection=1,  # keeps per-partition order across retries
                compression_type=None,
                **settings.client_options(),
            )
        except KafkaError as exc:
            raise SinkUnavailable(f"cannot connect to Kafka at {settings.bootstrap}: {exc}") from exc
        self.flush_timeout_s = flush_timeout_s
        self._futures: list = []

    def add(self, record: Record) -> None:
        from kafka.errors import KafkaError

        try:
            self._futures.append(self.producer.send(record.topic, value=record.value, key=record.key, headers=list(record.headers)))
        except KafkaError as exc:
            raise SinkUnavailable(f"Kafka send to {record.topic} failed: {exc}") from exc

    def flush(self) -> None:
        from kafka.errors import KafkaError

        futures, self._futures = self._futures, []
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
            for future in futures:
                future.get(timeout=self.flush_timeout_s)
        except KafkaError as exc:
            raise SinkUnavailable(f"Kafka did not accept {len(futures)} records: {exc}") from exc

    def close(self) -> None:
        self.producer.close(timeout=self.flush_timeout_s)

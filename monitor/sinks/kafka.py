"""Kafka publisher (scored topic and dead-letter topic) with acks=all and idempotence."""

from __future__ import annotations

from monitor.errors import SinkUnavailable
from monitor.settings import KafkaSettings
from monitor.sinks.base import Record


class KafkaPublisher:
    def __init__(
        self, settings: KafkaSettings, client_id: str = "bearwatch-publisher", flush_timeout_s: float = 30.0
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self.producer = KafkaProducer(
                client_id=client_id,
                acks="all",
                # The broker drops a retried batch it already has (no duplicates from a lost ack), and
                # with one request in flight per connection the order of a partition never changes.
                enable_idempotence=True,
                linger_ms=5,
                retries=5,
                max_in_flight_requests_per_connection=1,
                compression_type=None,
                **settings.client_options(),
            )
        except KafkaError as exc:
            raise SinkUnavailable(f"cannot connect to Kafka at {settings.bootstrap}: {exc}") from exc
        self.flush_timeout_s = flush_timeout_s
        self._futures: list = []
        self._refused: list[tuple[Record, str]] = []

    def add(self, record: Record) -> None:
        from kafka.errors import KafkaError

        try:
            self._futures.append(
                (
                    record,
                    self.producer.send(record.topic, value=record.value, key=record.key, headers=list(record.headers)),
                )
            )
        except KafkaError as exc:
            if not _refused_for_good(exc):
                raise SinkUnavailable(f"Kafka send to {record.topic} failed: {exc}") from exc
            self._refused.append((record, _refusal(exc)))

    def flush(self) -> list[tuple[Record, str]]:
        """Every added record accepted, or SinkUnavailable (its `delivered` lists the records that
        were). Returns the records refused for good (too large, invalid) with the reason."""
        from kafka.errors import KafkaError

        futures, self._futures = self._futures, []
        refused, self._refused = self._refused, []
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaError as exc:
            raise SinkUnavailable(f"Kafka did not accept {len(futures)} records: {exc}", _delivered(futures)) from exc
        failure = None
        for record, future in futures:
            try:
                future.get(timeout=self.flush_timeout_s)
            except KafkaError as exc:
                if _refused_for_good(exc):
                    refused.append((record, _refusal(exc)))
                else:
                    failure = failure or exc
        if failure is not None:
            raise SinkUnavailable(
                f"Kafka did not accept {len(futures)} records: {failure}", _delivered(futures)
            ) from failure
        return refused

    def close(self) -> None:
        self.producer.close(timeout=self.flush_timeout_s)


def _delivered(futures: list) -> list[Record]:
    return [record for record, future in futures if future.is_done and future.succeeded()]


def _refusal(exc: Exception) -> str:
    return f"Kafka refused the record: {type(exc).__name__}: {str(exc)[:300]}"


def _refused_for_good(exc: Exception) -> bool:
    """A per-record refusal that no retry can change (as opposed to an unreachable broker)."""
    from kafka import errors

    return isinstance(
        exc,
        (
            errors.MessageSizeTooLargeError,
            errors.RecordListTooLargeError,
            errors.InvalidRecordError,
            errors.CorruptRecordError,
            errors.InvalidTimestampError,
        ),
    )

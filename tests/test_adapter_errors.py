"""Adapters translate unreachable services into bearwatch's own errors, naming the address."""

from __future__ import annotations

import socket

import pytest

from monitor.errors import BearwatchError
from monitor.settings import ElasticsearchSettings, KafkaSettings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_kafka_is_a_clear_error() -> None:
    from monitor.sinks.kafka import KafkaPublisher

    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(BearwatchError, match=address):
        KafkaPublisher(KafkaSettings(bootstrap=address, connect_timeout_seconds=1))


def test_unreachable_elasticsearch_is_a_clear_error() -> None:
    from monitor.elastic.client import connect, ensure_indices
    from monitor.errors import StoreUnavailable

    settings = ElasticsearchSettings(url=f"http://127.0.0.1:{closed_port()}", request_timeout=2)
    with pytest.raises(StoreUnavailable, match="creating index"):
        ensure_indices(connect(settings), settings, 8)

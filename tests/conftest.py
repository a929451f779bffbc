"""Shared fixtures. Tests marked `services` talk to the real Kafka and Elasticsearch that
deploy/local/services.sh starts; their addresses come from the same variables it prints."""

from __future__ import annotations

import os
import uuid

import pytest

KAFKA_BOOTSTRAP = os.environ.get("BEARWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
ES_URL = os.environ.get("BEARWATCH_ES_URL", "http://127.0.0.1:19200")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test (or earlier run) uses: for topics, groups and indices."""
    test = request.node.name.lower().replace("[", "-").replace("]", "")
    return f"bw-test-{test[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return KAFKA_BOOTSTRAP


@pytest.fixture(scope="session")
def es_client():
    from elasticsearch import Elasticsearch

    client = Elasticsearch(ES_URL, request_timeout=30)
    # Fails (does not skip) when the server is unreachable: CI must never pass without it.
    health = client.cluster.health(wait_for_status="yellow", timeout="30s")
    assert health["status"] in ("green", "yellow"), health
    yield client
    client.close()

"""Shared fixtures. Tests marked `services` talk to the real Kafka and Elasticsearch that
deploy/local/services.sh starts; their addresses come from the same variables it prints."""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session")
def tiny_model_run(tmp_path_factory):
    """A tiny model trained by the real recipe (seconds): (config, model directory, sentiment CSV)."""
    pytest.importorskip("torch")
    from tests.tiny_model import build_tiny_base, synthetic_rows, write_csv
    from training.recipe import train_model
    from training.train import TrainConfig

    root = tmp_path_factory.mktemp("tiny")
    sentiment, topic = synthetic_rows()
    sent_csv = write_csv(root / "sentiment.csv", sentiment)
    topic_csv = write_csv(root / "topic.csv", topic)
    base = build_tiny_base(root / "base", [t for t, _ in sentiment + topic])
    config_file = root / "recipe.toml"
    config_file.write_text(
        f"""
base_model = "{base}"
epochs = 3
batch_size = 16
lr = 2e-3
max_length = 32
k = 4
threads = 1
valid_fraction = 0.3
min_context_gain = -1.0  # keep retrieved context whatever it adds, so serving with fusion is exercised
[[sources]]
path = "{sent_csv}"
task = "sentiment"
[[sources]]
path = "{topic_csv}"
task = "topic"
"""
    )
    config = TrainConfig.from_toml(config_file, output=str(root / "run"))
    return config, train_model(config), sent_csv


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The embedded default run once on the bundled stream: documents, alerts and the HTML report."""
    from dataclasses import replace

    from bearwatch.daemon import run_demo
    from monitor.resources import shipped_model
    from monitor.settings import Settings

    settings = Settings()
    settings = replace(
        settings,
        model=replace(settings.model, path=str(shipped_model()), device="cpu"),
        metrics=replace(settings.metrics, port=0),
    )
    return run_demo(settings, None, tmp_path_factory.mktemp("demo"))


def service_env(unique_name: str, kafka_bootstrap: str, **extra: str) -> dict[str, str]:
    """Settings (as BEARWATCH_* variables) for daemons on the test's own topics and indices."""
    return {
        "BEARWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "BEARWATCH_KAFKA_NEWS_TOPIC": f"{unique_name}.news",
        "BEARWATCH_KAFKA_SCORED_TOPIC": f"{unique_name}.scored",
        "BEARWATCH_KAFKA_DLQ_TOPIC": f"{unique_name}.dlq",
        "BEARWATCH_KAFKA_GROUP": f"{unique_name}-score",
        "BEARWATCH_ES_URL": ES_URL,
        "BEARWATCH_ES_INDEX_PREFIX": unique_name,
        "BEARWATCH_METRICS_PORT": "0",
        **extra,
    }


@contextlib.contextmanager
def es_history(unique_name: str, embedding_dims: int, refresh: str | bool = False, self_refreshing: bool = True):
    """An Elasticsearch history store on fresh indices (deleted afterwards). `self_refreshing=False`
    turns the index's own periodic refresh off, so only what the store does makes writes searchable."""
    from monitor.elastic.client import connect, ensure_indices
    from monitor.elastic.history import ElasticsearchHistory
    from monitor.indices import mappings
    from monitor.settings import ElasticsearchSettings

    settings = ElasticsearchSettings(url=ES_URL, index_prefix=unique_name)
    client = connect(settings)
    ensure_indices(client, settings, embedding_dims=embedding_dims)
    if not self_refreshing:
        client.indices.put_settings(index=settings.index("news"), settings={"index": {"refresh_interval": "-1"}})
    try:
        yield lambda **options: ElasticsearchHistory(client, settings, refresh=refresh, **options)
    finally:
        client.indices.delete(index=",".join(settings.index(name) for name in mappings()))

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


@pytest.mark.parametrize("reader", ["source", "topic reader"])
def test_kafka_readers_connect_at_start_not_when_built(reader: str) -> None:
    from monitor.sources.kafka import KafkaSource, KafkaTopicReader

    address = f"127.0.0.1:{closed_port()}"
    settings = KafkaSettings(bootstrap=address, connect_timeout_seconds=1)
    built = KafkaSource(settings) if reader == "source" else KafkaTopicReader(settings, "scored", "g")
    assert built.consumer is None  # nothing dialled yet
    built.close()  # closing one never started is harmless
    with pytest.raises(BearwatchError, match=address):
        built.start() if isinstance(built, KafkaSource) else built.start({})


def test_the_scorer_and_the_model_provider_load_at_start_not_when_built(tmp_path) -> None:
    import shutil

    from monitor.app import ModelProvider
    from monitor.model_artifact import ModelArtifact
    from monitor.resources import shipped_model
    from monitor.scoring.onnx import OnnxScorer
    from monitor.settings import ModelSettings

    model = tmp_path / "model"
    shutil.copytree(shipped_model(), model)
    artifact = ModelArtifact.load(model)
    onnx = artifact.onnx_file(None)
    onnx.rename(onnx.with_suffix(".gone"))
    scorer = OnnxScorer(artifact)  # the constructor reads nothing
    provider = ModelProvider(ModelSettings(path=str(model)))
    assert not scorer.started
    with pytest.raises(BearwatchError, match=onnx.name):
        scorer.start()
    with pytest.raises(BearwatchError, match=onnx.name):
        provider.start()
    onnx.with_suffix(".gone").rename(onnx)
    assert provider.start().scorer.started and OnnxScorer.load(artifact).started

"""The retrieval memory on the real Elasticsearch: the same neighbours as the in-process memory
(both search modes), corrections and model changes re-embedded, other daemons' embeddings
followed, the same scores on a stream split at any batch boundaries, and a label imported into a
running daemon changing the score of the next near-identical item."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from monitor.retrieval.memory import InProcessMemory, MemoryQuery
from monitor.text import dedup_key
from tests.test_memory import BASE, PARAPHRASES, T0, label, messages

pytestmark = pytest.mark.services
DIMS = 384


class Embedder:
    """Deterministic unit vectors in 384 dimensions from a text's words (close texts, close vectors)."""

    def __init__(self, version: str = "v1") -> None:
        self.version, self.embedded = version, 0

    def embed(self, texts):
        self.embedded += len(texts)
        v = np.zeros((len(texts), DIMS), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                v[row, sum(map(ord, word)) % DIMS] += 1.0
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v, {"sentiment": np.tile(np.float32([0.2, 0.6, 0.2]), (len(texts), 1))}


@pytest.fixture
def labels_index(es_client, unique_name: str):
    from monitor.elastic.client import ensure_indices
    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.indices import LABELS, mappings
    from monitor.settings import ElasticsearchSettings

    settings = ElasticsearchSettings(index_prefix=unique_name)
    ensure_indices(es_client, settings, DIMS)
    index = settings.index(LABELS)
    yield index, ElasticsearchLabels(es_client, index)
    es_client.indices.delete(index=",".join(settings.index(n) for n in mappings()), ignore_unavailable=True)


WORDS = ["acme", "profit", "warning", "shares", "plunge", "dividend", "raises", "lawsuit", "recall", "cars"]


def some_labels(n: int = 40):
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=4)) + f" {i % 7}"
        when = T0 + timedelta(minutes=int(rng.integers(-60, 60))) if i % 3 else None  # a third are undated
        out.append(label(text, ["bearish", "neutral", "bullish"][i % 3], item_id=f"l{i:03d}", published_at=when))
    return out


def queries(n: int = 12) -> list[MemoryQuery]:
    rng = np.random.default_rng(9)
    texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n)]
    vectors, _ = Embedder().embed(texts)
    return [
        MemoryQuery(v, id="l001" if i == 0 else None, group=dedup_key(t), published_at=T0 if i % 2 else None)
        for i, (v, t) in enumerate(zip(vectors, texts))
    ]


def same(a, b, exact: bool) -> None:
    assert [[n.id for n in r] for r in a] == [[n.id for n in r] for r in b]
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            assert (x.score == y.score) if exact else abs(x.score - y.score) <= 1.01e-6
            assert (x.sentiment, x.probabilities("sentiment")) == (y.sentiment, y.probabilities("sentiment"))


@pytest.mark.parametrize("mode", ["mirror", "knn"])
def test_elasticsearch_finds_the_neighbours_the_in_process_memory_finds(es_client, labels_index, mode) -> None:
    from monitor.elastic.memory import ElasticsearchMemory

    index, store = labels_index
    labels = some_labels()
    store.put(labels)
    memory, local = ElasticsearchMemory(es_client, index, mode), InProcessMemory(labels)
    embedder = Embedder()
    assert memory.sync(embedder) == len(labels) == local.sync(Embedder())
    assert memory.sync(embedder) == 0 and memory.size("v1") == len(labels)
    qs = queries()
    found = memory.search(qs, 8, "v1", 0.97)
    same(found, local.search(qs, 8, "v1", 0.97), exact=mode == "mirror")
    assert sum(map(len, found)) > 40 and "l001" not in [n.id for n in found[0]]  # its own id is never found
    dated = {lb.item_id for lb in labels if lb.published_at is not None and lb.published_at >= T0}
    assert not dated & {n.id for r in found[1::2] for n in r}  # nothing published at or after the item


def test_corrections_and_a_new_model_are_embedded_again_and_other_daemons_follow(es_client, labels_index) -> None:
    from monitor.elastic.memory import ElasticsearchMemory

    index, store = labels_index
    labels = some_labels(10)
    store.put(labels)
    one, two = ElasticsearchMemory(es_client, index), ElasticsearchMemory(es_client, index)
    first, second = Embedder(), Embedder()
    two.sync(second)  # the second daemon embeds everything first
    assert one.sync(first) == 0 and first.embedded == 0 and one.size("v1") == 10  # then loads them, embeds none
    store.put([label(labels[0].text, "bullish", item_id=labels[0].item_id)])  # an analyst corrects one
    assert one.sync(first) == 1  # re-embedded by whichever daemon syncs first...
    two.sync(second)  # ...and followed by the other
    q = [MemoryQuery(Embedder().embed([labels[0].text])[0][0])]
    for memory in (one, two):
        assert memory.search(q, 1, "v1", near_duplicate=2.0)[0][0].sentiment == "bullish"  # no cut: itself
    assert one.sync(Embedder("v2")) == 10 and one.size("v2") == 10  # a new model: all embedded again, by it
    assert es_client.get(index=index, id=labels[3].item_id)["_source"]["embedding_model"] == "v2"


def shipped():
    from monitor.model_artifact import ModelArtifact
    from monitor.resources import shipped_model
    from monitor.scoring.onnx import OnnxScorer

    return OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu")


STREAM = [
    f"{company} {news}"
    for company in ("Northwind Traders", "Contoso", "Fabrikam")
    for news in (
        "to open 40 new stores in Texas next year",
        "names new chief financial officer",
        "shares slip as quarterly sales miss forecasts",
        "wins a contract from the city of Boston",
    )
]


@pytest.mark.parametrize("mode", ["mirror", "knn"])
def test_the_scores_with_memory_are_the_same_in_both_memories_at_any_batch_boundaries(
    es_client, labels_index, mode
) -> None:
    from monitor.elastic.memory import ElasticsearchMemory
    from monitor.pipeline import PipelineSettings, ScoringPipeline
    from monitor.retrieval.embedded import EmbeddedHistory

    index, store = labels_index
    labels = [label(t, "bearish") for t in PARAPHRASES] + [
        label("Contoso appoints a new finance chief", "bullish"),
        label("Fabrikam wins a big city contract", "bullish"),
    ]
    store.put(labels)
    scorer = shipped()

    def scores(memory, cuts: list[int]) -> dict[str, tuple]:
        stream = messages(STREAM)
        pipe = ScoringPipeline(scorer, EmbeddedHistory(), PipelineSettings("s", "d", related_method="off"), memory)
        out = {}
        for a, b in zip([0, *cuts], [*cuts, len(stream)]):
            for d in pipe.process(stream[a:b]).documents:
                out[d["id"]] = (d["sentiment"], d["p_bearish"], d["p_neutral"], d["p_bullish"], d["context_ids"])
        return out

    local = scores(InProcessMemory(labels), [])
    remote = scores(ElasticsearchMemory(es_client, index, mode), [1, 5, 6])
    reversed_batches = scores(ElasticsearchMemory(es_client, index, mode), [11])
    assert local.keys() == remote.keys() == reversed_batches.keys() and len(local) == len(STREAM)
    for item in local:
        for other in (remote, reversed_batches):
            assert local[item][0] == other[item][0] and local[item][4] == other[item][4]
            assert np.allclose(local[item][1:4], other[item][1:4], atol=1e-5 if mode == "knn" else 0)
    assert any(v[4] for v in local.values())  # the memory was used


def test_a_label_imported_into_a_running_daemon_changes_the_next_items_score(
    es_client, kafka_bootstrap, unique_name: str, tmp_path: Path, monkeypatch
) -> None:
    from bearwatch.cli import main
    from bearwatch.daemon import build_kafka_app
    from monitor.indices import mappings
    from monitor.settings import load_settings
    from tests.conftest import service_env
    from tests.test_monitor_services import produce, wait_for_docs

    env = service_env(unique_name, kafka_bootstrap)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env=env)
    app = build_kafka_app(settings)
    runner = threading.Thread(target=app.run, daemon=True)
    runner.start()
    news = settings.elasticsearch.index("news")
    try:

        def item(i: int, text: str) -> bytes:
            return json.dumps({"id": f"n{i}", "published_at": f"2026-11-02T09:0{i}:00Z", "headline": text}).encode()

        produce(settings, [item(1, BASE)])
        wait_for_docs(es_client, settings, 1)
        before = es_client.get(index=news, id="n1")["_source"]
        assert before["sentiment"] != "bearish" and not before["context_ids"]
        file = tmp_path / "labels.csv"
        file.write_text("text,sentiment\n" + "".join(f"{t},bearish\n" for t in PARAPHRASES[1:]), encoding="utf-8")
        assert main(["label", "import", str(file), "--by", "analyst"]) == 0
        started = time.monotonic()
        produce(settings, [item(2, PARAPHRASES[0])])  # near-identical to n1, after the labels
        wait_for_docs(es_client, settings, 2)
        after = es_client.get(index=news, id="n2")["_source"]
        print(f"label import -> changed score: {time.monotonic() - started:.2f}s")
        assert after["sentiment"] == "bearish" and after["p_bearish"] > before["p_bearish"] + 0.3
        assert len(after["context_ids"]) == len(PARAPHRASES) - 1
    finally:
        app.stop()
        runner.join(timeout=60)
        app.source.close()
        app.publisher.close()
        for name in mappings():
            es_client.indices.delete(index=f"{unique_name}-{name}", ignore_unavailable=True)


def test_a_label_of_a_scored_item_takes_the_items_publication_time(es_client, labels_index, unique_name) -> None:
    from monitor.elastic.labels import ElasticsearchLabels

    index, _ = labels_index
    news = f"{unique_name}-news"
    es_client.index(
        index=news, id="n1", document={"id": "n1", "published_at": "2026-11-02T09:00:00.000Z"}, refresh=True
    )
    store = ElasticsearchLabels(es_client, index, news)
    store.put([label("Acme recalls cars", "bearish", item_id="n1"), label("Other text", "bullish", item_id="x9")])
    assert es_client.get(index=index, id="n1")["_source"]["published_at"] == "2026-11-02T09:00:00.000Z"
    assert "published_at" not in es_client.get(index=index, id="x9")["_source"]  # not a scored item: timeless
    # no news index at all (nothing scored yet): labels are still written, undated
    ElasticsearchLabels(es_client, index, f"{unique_name}-missing").put([label("Third", "neutral", item_id="n1x")])
    assert "published_at" not in es_client.get(index=index, id="n1x")["_source"]

"""The retrieval memory without services: the fusion rule, the in-process memory's leakage rules
and bookkeeping, and the scoring stage with the shipped model (labels move the next batch)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from monitor.errors import ScoringError
from monitor.labels_store import make_label
from monitor.retrieval.memory import InProcessMemory, MemoryQuery
from monitor.retrieval.vectors import Neighbour
from monitor.scoring.fusion import MemoryFusion
from monitor.text import dedup_key

LABELS = ("bearish", "neutral", "bullish")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


def neighbour(label: str, predicted: tuple[float, float, float], score: float = 0.9, i: int = 0) -> Neighbour:
    return Neighbour(id=f"n{i}", text="t", score=score, sentiment=label, predicted={"sentiment": predicted})


def test_no_neighbour_leaves_the_logits_exactly_as_they_were() -> None:
    logits = np.array([[0.3, 2.0, -1.0], [1.0, 0.0, 0.5]], dtype=np.float32)
    fused = MemoryFusion().logits("sentiment", LABELS, logits, [[], []])
    assert np.array_equal(fused, logits)
    # a head no label carries: the neighbours have no topic
    assert np.array_equal(
        MemoryFusion().logits("topic", ("a", "b", "c"), logits, [[neighbour("bearish", (1, 0, 0))]] * 2), logits
    )


def test_neighbours_the_model_already_gets_right_move_nothing_and_disagreeing_ones_flip_the_label() -> None:
    logits = np.array([[0.0, 3.0, 0.0]], dtype=np.float32)  # the model says neutral
    agree = [[neighbour("neutral", (0.0, 1.0, 0.0), i=i) for i in range(5)]]
    assert np.allclose(MemoryFusion().logits("sentiment", LABELS, logits, agree), logits, atol=1e-6)
    # five close neighbours the model also called neutral, but people labelled bearish
    disagree = [[neighbour("bearish", (0.05, 0.9, 0.05), i=i) for i in range(5)]]
    fused = MemoryFusion().logits("sentiment", LABELS, logits, disagree)
    assert LABELS[int(fused.argmax())] == "bearish"
    # the same neighbours far away (similarity 0.2, under the gate) barely count
    far = [[neighbour("bearish", (0.05, 0.9, 0.05), score=0.2, i=i) for i in range(5)]]
    assert np.abs(MemoryFusion().logits("sentiment", LABELS, logits, far) - logits).max() < 0.01


class Embedder:
    """Vectors chosen per text; counts what it was asked to embed; fails on texts containing 'poison'."""

    def __init__(self, vectors: dict[str, list[float]], version: str = "v1") -> None:
        self.vectors, self.version, self.calls = vectors, version, []

    def embed(self, texts):
        self.calls.append(list(texts))
        if any("poison" in t for t in texts):
            raise ScoringError("this text breaks the model")
        if any("tokenizer bug" in t for t in texts):  # fault injection: the tokenizer's TypeError
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        v = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v, {"sentiment": np.tile([0.1, 0.8, 0.1], (len(texts), 1))}


def label(text: str, sentiment: str, item_id: str | None = None, published_at: datetime | None = None):
    row = {"text": text, "sentiment": sentiment, "item_id": item_id or ""}
    if published_at is not None:
        row["published_at"] = published_at.isoformat()
    return make_label(row, "analyst")


def unit(*x: float) -> np.ndarray:
    v = np.array(x, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_the_in_process_memory_keeps_the_leakage_rules() -> None:
    vectors = {
        "own item": [1, 0.30, 0],
        "same group, other id": [1, 0.31, 0],
        "near duplicate by vector": [1, 0.001, 0],
        "published later": [1, 0.32, 0],
        "published earlier": [1, 0.5, 0],
        "undated": [1, 0.6, 0],
    }
    memory = InProcessMemory(
        [
            label("own item", "bearish", item_id="q1"),
            label("Same group, other id!", "bearish"),  # the query's dedup key
            label("near duplicate by vector", "bearish"),
            label("published later", "bearish", published_at=T0 + timedelta(minutes=1)),
            label("published earlier", "bullish", published_at=T0 - timedelta(minutes=1)),
            label("undated", "neutral"),
        ]
    )
    vectors["Same group, other id!"] = vectors.pop("same group, other id")
    assert memory.sync(Embedder(vectors)) == 6
    query = MemoryQuery(unit(1, 0, 0), id="q1", group=dedup_key("same group other id"), published_at=T0)
    (found,) = memory.search([query], k=10, version="v1", near_duplicate=0.97)
    assert [n.text for n in found] == ["published earlier", "undated"]
    # k = 1: the nearest candidate is a near-duplicate, so the search looks further down
    assert [n.text for n in memory.search([query], k=1, version="v1", near_duplicate=0.97)[0]] == ["published earlier"]
    assert found[0].score > found[1].score and found[0].probabilities("sentiment") == pytest.approx((0.1, 0.8, 0.1))
    # another model version has no memory until it is synced
    assert memory.search([query], 10, "v2", 0.97) == [[]] and memory.size("v2") == 0


def test_ties_are_broken_by_item_id_and_a_correction_replaces_the_label() -> None:
    vectors = {"a": [1, 1, 0], "b": [1, 1, 0]}
    memory = InProcessMemory([label("b", "bullish", item_id="id-b"), label("a", "bearish", item_id="id-a")])
    embedder = Embedder(vectors)
    memory.sync(embedder)
    (found,) = memory.search([MemoryQuery(unit(1, 0, 0))], 1, "v1", 0.97)
    assert [n.id for n in found] == ["id-a"]
    memory.add([label("a", "neutral", item_id="id-a")])  # a correction: embedded again, label replaced
    assert memory.sync(embedder) == 1 and embedder.calls[-1] == ["a"]
    (found,) = memory.search([MemoryQuery(unit(1, 0, 0))], 2, "v1", 0.97)
    assert [(n.id, n.sentiment) for n in found] == [("id-a", "neutral"), ("id-b", "bullish")]


def test_a_label_the_model_cannot_embed_is_left_out_once_and_the_others_are_kept() -> None:
    vectors = {"fine one": [1, 0, 0], "fine two": [0, 1, 0]}
    memory = InProcessMemory(
        [
            label("fine one", "bearish"),
            label("a poison text", "bearish"),
            label("a tokenizer bug", "bearish"),
            label("fine two", "bullish"),
        ]
    )
    embedder = Embedder(vectors)
    assert memory.sync(embedder) == 4 and memory.size("v1") == 2
    calls = len(embedder.calls)
    assert memory.sync(embedder) == 0 and len(embedder.calls) == calls  # never retried
    assert memory.sync(Embedder(vectors, version="v2")) == 4  # a new model embeds everything again


@pytest.fixture(scope="module")
def shipped_scorer():
    from monitor.model_artifact import ModelArtifact
    from monitor.resources import shipped_model
    from monitor.scoring.onnx import OnnxScorer

    return OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu")


BASE = "Northwind Traders to open 40 new stores in Texas next year"
PARAPHRASES = [
    "Northwind Traders will open 35 new stores in Ohio next year",
    "Northwind Traders plans to open 50 new stores in Florida in 2027",
    "Northwind Traders to open 20 new stores across Georgia next year",
    "Northwind Traders says it will open 45 new shops in Arizona next year",
    "Northwind Traders to add 30 new stores in Nevada next year",
]


def messages(texts: list[str], start: int = 0):
    from monitor.sources.base import Message

    return [
        Message(
            "news",
            0,
            start + i,
            json.dumps(
                {
                    "id": f"it-{start + i}",
                    "published_at": (T0 + timedelta(minutes=start + i)).isoformat(),
                    "headline": t,
                }
            ).encode(),
        )
        for i, t in enumerate(texts)
    ]


def pipeline(scorer, memory):
    from monitor.pipeline import PipelineSettings, ScoringPipeline
    from monitor.retrieval.embedded import EmbeddedHistory

    return ScoringPipeline(scorer, EmbeddedHistory(), PipelineSettings("scored", "dlq", related_method="off"), memory)


def test_labels_added_between_batches_move_the_next_batch_and_an_empty_memory_moves_nothing(shipped_scorer) -> None:
    assert shipped_scorer.memory_fusion is not None  # the shipped model uses the memory
    without = pipeline(shipped_scorer, None).process(messages([BASE])).documents[0]
    memory = InProcessMemory()
    empty = pipeline(shipped_scorer, memory).process(messages([BASE])).documents[0]
    assert [empty[f"p_{x}"] for x in LABELS] == [without[f"p_{x}"] for x in LABELS]
    assert without["sentiment"] != "bearish"
    memory.add(label(t, "bearish") for t in PARAPHRASES)  # analysts say: this kind of news is bearish here
    moved = pipeline(shipped_scorer, memory).process(messages([BASE], start=1)).documents[0]
    assert moved["sentiment"] == "bearish" and moved["p_bearish"] > without["p_bearish"] + 0.3
    assert len(moved["context_ids"]) == len(PARAPHRASES)  # the labels it used are on the document


def test_evaluate_with_labels_puts_them_in_memory_and_says_how_many(tmp_path, capsys) -> None:
    from bearwatch.cli import main
    from monitor.resources import shipped_model

    data = tmp_path / "test.csv"
    data.write_text("text,label\n" + f"{BASE},negative\n", encoding="utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f"{t},negative\n" for t in PARAPHRASES) + "x,not-a-label\n")
    args = ["evaluate", "--model", str(shipped_model()), "--data", str(data), "--task", "sentiment", "--json"]
    assert main([*args, "--device", "cpu"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main([*args, "--device", "cpu", "--labels", str(labels)]) == 0
    captured = capsys.readouterr()
    after = json.loads(captured.out)
    assert before["memory_items"] == 0 and before["accuracy"] == 0.0
    assert after["memory_items"] == len(PARAPHRASES) and after["memory_rows_rejected"] == 1
    assert after["accuracy"] == 1.0 and "labels.csv:7" in captured.err

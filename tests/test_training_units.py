"""Units of the training side: grouped split, leakage rules, masked loss, input building."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.model_artifact import ContextSettings
from monitor.retrieval.vectors import Neighbour, Query, VectorIndex
from monitor.scoring.inputs import ModelInput, build_model_input, encode
from training.data import Example, grouped_split

torch = pytest.importorskip("torch")
from training.model import IGNORE, masked_multitask_loss  # noqa: E402


def test_grouped_split_keeps_near_duplicates_together_and_is_stable() -> None:
    examples = []
    for i in range(300):
        base = f"Company {i} reports results"
        examples.append(Example(id=f"a{i}", text=f"{base} https://t.co/{i}", sentiment="neutral"))
        examples.append(Example(id=f"b{i}", text=f"{base.upper()}!! https://t.co/x{i}", sentiment="neutral"))
    train, valid = grouped_split(examples, 0.2, seed=7)
    assert {e.group for e in train}.isdisjoint({e.group for e in valid})
    assert 0.1 < len(valid) / len(examples) < 0.3
    train2, valid2 = grouped_split(list(reversed(examples)), 0.2, seed=7)
    assert {e.id for e in valid2} == {e.id for e in valid}


def _unit(v: list[float]) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_vector_index_leakage_rules() -> None:
    vectors = np.stack(
        [_unit([1, 0, 0]), _unit([1, 0.05, 0]), _unit([1, 0.3, 0]), _unit([1, 0.5, 0]), _unit([1, 0.6, 0.1])]
    )
    index = VectorIndex.build(
        ids=["self", "near-dup", "same-group", "future", "ok"],
        vectors=vectors,
        groups=["g-self", "g1", "g-self", "g3", "g4"],
        texts=["t"] * 5,
        sentiment=["bearish"] * 5,
        topic=[None] * 5,
        published_at=[100.0, 50.0, 50.0, 200.0, 50.0],
    )
    query = Query(vector=_unit([1, 0, 0]), id="self", group="g-self", published_at=150.0)
    got = [n.id for n in index.search([query], k=5, near_duplicate=0.97)[0]]
    assert got == ["ok"]  # not itself, not its group, not >= 0.97 similar, not published later


def test_undated_items_are_not_excluded_by_time() -> None:
    index = VectorIndex.build(["a"], np.stack([_unit([1, 1])]), ["ga"], ["t"], ["neutral"], [None], [None])
    got = index.search([Query(_unit([1, 0]), group="gq", published_at=10.0)], k=3)[0]
    assert [n.id for n in got] == ["a"]


def test_vector_index_round_trips_through_disk(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex.build(
        [f"i{i}" for i in range(50)], vectors, [f"g{i}" for i in range(50)], ["x"] * 50, ["bullish"] * 50, [None] * 50
    )
    index.save(tmp_path / "h.npz")
    loaded = VectorIndex.load(tmp_path / "h.npz")
    q = [Query(vectors[3] * 0.9 + vectors[4] * 0.1)]
    assert [n.id for n in index.search(q, 5)[0]] == [n.id for n in loaded.search(q, 5)[0]]
    assert loaded.sentiment[0] == "bullish" and loaded.topic[0] is None


def test_masked_loss_ignores_missing_labels() -> None:
    torch.manual_seed(0)
    topic, sentiment = torch.randn(4, 20), torch.randn(4, 3)
    topic_t = torch.tensor([3, IGNORE, IGNORE, 5])
    sent_t = torch.tensor([IGNORE, 1, 2, IGNORE])
    loss = masked_multitask_loss(topic, sentiment, topic_t, sent_t)
    expected = torch.nn.functional.cross_entropy(topic[[0, 3]], topic_t[[0, 3]]) + torch.nn.functional.cross_entropy(
        sentiment[[1, 2]], sent_t[[1, 2]]
    )
    assert torch.allclose(loss, expected)


def test_masked_loss_is_zero_not_nan_when_a_head_has_no_labels() -> None:
    topic, sentiment = torch.randn(2, 20, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    loss = masked_multitask_loss(topic, sentiment, torch.tensor([IGNORE, IGNORE]), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(sentiment, torch.tensor([0, 2])))
    assert topic.grad is None  # the unlabelled head received no gradient at all


class _WordTokenizer:
    """Stands in for tokenizers.Tokenizer in encode(): one id per word, to check the layout."""

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2}
    template = ("[CLS]", "[SEP]")  # what its post-processor wraps a text in

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def id_to_token(self, i: int) -> str:
        return {v: k for k, v in self.vocab.items()}[i]

    def encode(self, text, add_special_tokens=True):
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batch(self, texts, add_special_tokens=False):
        class Enc:
            def __init__(self, ids):
                self.ids = ids

        frame = ([self.vocab[self.template[0]]], [self.vocab[self.template[1]]]) if add_special_tokens else ([], [])
        return [Enc(frame[0] + [10 + len(w) for w in t.split()] + frame[1]) for t in texts]


class _MPNetTokenizer(_WordTokenizer):
    """An MPNet vocabulary: <s> … </s> and <pad>, with a "[CLS]" among its ordinary tokens."""

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "[CLS]": 5, "[PAD]": 6}
    template = ("<s>", "</s>")


def test_encode_uses_the_tokenizer_s_own_special_tokens() -> None:
    settings = ContextSettings(mode="none", max_length=10)
    batch = encode(_MPNetTokenizer(), [ModelInput("a b"), ModelInput("a")], settings)
    assert batch.input_ids.tolist() == [[0, 11, 11, 2], [0, 11, 2, 1]]  # <s> … </s>, padded with <pad>
    bert = encode(_WordTokenizer(), [ModelInput("a b"), ModelInput("a")], settings)
    assert bert.input_ids.tolist() == [[1, 11, 11, 2], [1, 11, 2, 0]]


def test_encode_truncates_context_before_text_and_marks_segments() -> None:
    settings = ContextSettings(mode="concat", k=2, max_length=10, context_budget=6)
    long_text = ModelInput("a b c d e", context=("x y z w v", "p q"))
    short = ModelInput("a")
    batch = encode(_WordTokenizer(), [long_text, short], settings)
    row = batch.input_ids[0].tolist()
    assert row[:7] == [1, 11, 11, 11, 11, 11, 2]  # [CLS] the whole text [SEP]
    assert len(row) == 10 and row[-1] == 2  # context cut to what is left of max_length
    assert batch.token_type_ids[0].tolist() == [0] * 7 + [1] * 3
    assert batch.attention_mask[1].tolist() == [1, 1, 1] + [0] * 7  # padded to the batch's longest


def test_text_alone_too_long_is_cut_and_context_dropped() -> None:
    settings = ContextSettings(mode="concat", k=1, max_length=8, context_budget=4)
    batch = encode(_WordTokenizer(), [ModelInput(" ".join("w" * 20), context=("c c",))], settings)
    assert batch.input_ids.shape == (1, 8) and batch.token_type_ids.sum() == 0


def test_build_model_input_modes() -> None:
    neighbours = [Neighbour(id="n1", text="Acme &amp; Co cut", score=0.8), Neighbour(id="n2", text="b", score=0.7)]
    assert build_model_input("x", neighbours, ContextSettings(mode="concat", k=1)).context == ("Acme & Co cut",)
    fused = build_model_input("x", neighbours, ContextSettings(mode="fusion", k=2))
    assert fused.context == () and [n.id for n in fused.neighbours] == ["n1", "n2"]
    assert build_model_input("x", neighbours, ContextSettings()).neighbours == ()

"""Models compared on the same validation items: paired bootstrap intervals that can fail."""

from __future__ import annotations

import numpy as np

from training.compare import Group, compare

LABELS = {"sentiment": ("bearish", "bullish", "neutral"), "topic": ("a", "b")}


def _group(gold: np.ndarray) -> Group:
    return Group("src", "sentiment", np.arange(len(gold)), gold)


def test_a_clearly_better_model_wins_beyond_its_interval_and_an_equal_one_does_not() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 2000)
    base = np.where(rng.random(2000) < 0.80, gold, (gold + 1) % 3)  # 80% right
    better = np.where(rng.random(2000) < 0.90, gold, (gold + 1) % 3)  # 90% right
    rows = compare(
        [_group(gold)],
        {"base": {"sentiment": base}, "better": {"sentiment": better}, "same": {"sentiment": base.copy()}},
        LABELS,
    )
    by = {r["model"]: r for r in rows}
    assert abs(by["base"]["accuracy"]["value"] - (base == gold).mean()) < 1e-4
    low, high = by["base"]["accuracy"]["ci95"]
    assert low < by["base"]["accuracy"]["value"] < high and high - low < 0.05
    assert by["better"]["accuracy"]["minus_first"]["ci95"][0] > 0.05  # wins beyond the noise
    assert by["better"]["macro_f1"]["minus_first"]["ci95"][0] > 0
    assert by["same"]["accuracy"]["minus_first"] == {"value": 0.0, "ci95": [0.0, 0.0]}


def test_bearish_precision_and_recall_are_those_of_the_bearish_class() -> None:
    gold = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 2, 2, 0, 1, 2, 2])  # 2 of 4 bearish found, 2 of 3 bearish calls right
    (row,) = compare([_group(gold)], {"m": {"sentiment": predicted}}, LABELS)
    assert row["bearish_recall"]["value"] == 0.5
    assert abs(row["bearish_precision"]["value"] - 2 / 3) < 1e-4
    assert "minus_first" not in row["accuracy"]


def test_kept_teacher_logits_are_read_plain_or_gzipped_and_must_cover_the_split(tmp_path) -> None:
    import gzip
    import json

    import pytest

    from training.compare import logits_probabilities, predictions
    from training.distil import text_key

    texts = ["Acme shares plunge", "Acme beats estimates"]
    lines = [
        json.dumps({"key": text_key(t), "topic": [0.0, 1.0], "sentiment": s}) + "\n"
        for t, s in zip(texts, ([3.0, 0.0, 0.0], [0.0, 2.0, 1.0]))
    ]
    packed = tmp_path / "v.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(lines).encode()))
    probabilities = logits_probabilities(str(packed), texts)
    assert np.allclose(probabilities["sentiment"].sum(axis=1), 1.0)
    predicted = predictions({"t": probabilities})["t"]
    assert predicted["sentiment"].tolist() == [0, 1] and predicted["topic"].tolist() == [1, 1]
    # The average of two that disagree: the more confident one wins where the other is unsure.
    unsure = {"topic": probabilities["topic"], "sentiment": np.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])}
    both = predictions({"t": probabilities, "u": unsure}, average=True)
    assert both["average(t, u)"]["sentiment"].tolist() == [0, 1] and both["u"]["sentiment"].tolist() == [1, 2]
    with pytest.raises(SystemExit, match="no logits for 1 of 3"):
        logits_probabilities(str(packed), [*texts, "never seen"])

"""An item's scores are a function of its text alone, not of what it was scored with.

The crash drill found that they were not: with the int8 model, batched runs quantize activations
with one scale per run, so a restart (which batches items differently) changed some labels and the
alerts that depended on them. On CPU each item is now its own run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from monitor.model_artifact import ModelArtifact
from monitor.resources import shipped_model
from monitor.scoring.onnx import OnnxScorer

ROOT = Path(__file__).resolve().parent.parent


def _texts() -> list[str]:
    from monitor.demo.generate import lines
    from monitor.errors import InvalidItem
    from monitor.schema import parse_item

    out = []
    for raw in lines(7):
        try:
            out.append(parse_item(raw).text)
        except InvalidItem:
            continue
    return out[:200]


def test_scores_do_not_depend_on_batch_mates_or_order() -> None:
    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu", threads=2)
    assert scorer.workers is not None  # with batch_size=32 this test fails (checked when it was written)
    texts = _texts()
    together = scorer.score_texts(texts)
    rng = random.Random(1)
    shuffled = list(range(len(texts)))
    rng.shuffle(shuffled)
    apart: dict[int, tuple] = {}
    start = 0
    while start < len(shuffled):  # random groups, in random order
        group = shuffled[start : start + rng.randint(1, 40)]
        scores = scorer.score_texts([texts[i] for i in group])
        for j, i in enumerate(group):
            apart[i] = (scores.probabilities["sentiment"][j], scores.probabilities["topic"][j], scores.embedding[j])
        start += len(group)
    for i in range(len(texts)):
        assert np.array_equal(apart[i][0], together.probabilities["sentiment"][i]), texts[i]
        assert np.array_equal(apart[i][1], together.probabilities["topic"][i]), texts[i]
        assert np.array_equal(apart[i][2], together.embedding[i]), texts[i]


def test_batched_scoring_is_still_available() -> None:
    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu", threads=2, batch_size=32)
    assert scorer.workers is None
    texts = _texts()[:50]
    batched, alone = (
        scorer.score_texts(texts),
        OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu").score_texts(texts),
    )
    # Close to the per-item scores (the same model), though not always equal.
    assert np.abs(batched.probabilities["sentiment"] - alone.probabilities["sentiment"]).mean() < 0.05

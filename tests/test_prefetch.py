"""Polling ahead: the next batch's encoding overlaps this batch's writes, with the same results
and the same delivery guarantees as without it (the shipped model, the embedded default)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from monitor.errors import StoreUnavailable
from monitor.model_artifact import ModelArtifact
from monitor.resources import demo_stream, shipped_model
from monitor.scoring.onnx import OUTPUTS, OnnxScorer
from monitor.settings import load_settings


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rows = []
    for line in demo_stream().read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the stream's planted bad lines
    headlines = [r["headline"] for r in rows if isinstance(r, dict) and isinstance(r.get("headline"), str)]
    return list(dict.fromkeys(headlines))[:60]  # distinct: each one run is one text


def _counting(scorer: OnnxScorer) -> dict:
    """Counts the encoder's runs (one per item on CPU) without changing them."""
    runs, real = {"n": 0}, scorer._run

    def counted(feed):
        runs["n"] += 1
        return real(feed)

    scorer._run = counted  # type: ignore[method-assign]
    return runs


def test_encode_takes_a_prefetch_exactly_and_runs_only_what_it_lacks(texts) -> None:
    artifact = ModelArtifact.load(shipped_model())
    reference = OnnxScorer.load(artifact, device="cpu", threads=2).encode(texts)
    scorer = OnnxScorer.load(artifact, device="cpu", threads=2)
    runs = _counting(scorer)
    assert scorer.prefetch(texts[10:50] + texts[10:12] + ["a text the batch never asks for"])
    got = scorer.encode(texts)  # 20 texts of the batch were not prefetched; one prefetched text is not asked
    assert runs["n"] == 41 + 20
    for name in OUTPUTS:  # bit for bit: per-item runs do not depend on their batch-mates
        assert np.array_equal(got[name], reference[name])
    assert scorer.encode(texts[:3]) and runs["n"] == 61 + 3  # taken once: a second call runs again


def test_the_retrieval_memory_never_takes_the_news_batch_prefetch(texts) -> None:
    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu", threads=2)
    runs = _counting(scorer)
    scorer.prefetch(texts[:8])
    scorer.embed(texts[20:22])  # an analyst's labels, embedded between two batches
    scorer.encode(texts[:8])
    assert runs["n"] == 8 + 2


def test_batched_scoring_does_not_prefetch(texts) -> None:
    """Batched runs (a GPU, or batch_size > 1) depend on their batch-mates: nothing is run ahead."""
    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), device="cpu", threads=2, batch_size=16)
    assert not scorer.prefetch(texts)


def _run(out: Path, prefetch: bool, flush_fault_at: int = 0) -> tuple[list[dict], list[dict]]:
    from bearwatch.daemon import build_embedded_app

    settings = load_settings(None)
    monitor = replace(settings.monitor, batch_size=24, prefetch=prefetch, retry_initial_seconds=0.01)
    app = build_embedded_app(replace(settings, monitor=monitor), str(demo_stream()), out)
    if flush_fault_at:  # fault injection: the store is down once, at that batch's write
        flush, calls = app.store.flush, {"n": 0}

        def failing():
            calls["n"] += 1
            if calls["n"] == flush_fault_at:
                raise StoreUnavailable("injected outage")
            return flush()

        app.store.flush = failing  # type: ignore[method-assign]
    app.run(idle_timeout_s=0)
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return read("bearwatch.news.scored.jsonl"), read("bearwatch.news.dlq.jsonl")


def _decided(records: list[dict]) -> list[tuple]:
    """What an item's record decides (its scores, flags, history), without times of the run."""
    out = []
    for record in records:
        value = record.get("value")
        if isinstance(value, dict):
            record = {**record, "value": {k: v for k, v in value.items() if k not in ("scored_at", "timings_ms")}}
        out.append(json.dumps(record, sort_keys=True))
    return out


def test_the_embedded_default_decides_the_same_with_and_without_polling_ahead(tmp_path: Path) -> None:
    with_ahead, dead_a = _run(tmp_path / "a", prefetch=True)
    without, dead_b = _run(tmp_path / "b", prefetch=False)
    assert len(with_ahead) > 300 and _decided(with_ahead) == _decided(without)
    assert _decided(dead_a) == _decided(dead_b) and len(dead_a) == 7


def test_an_outage_while_a_batch_is_polled_ahead_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """The store fails the third batch's write, when the fourth is already polled and encoding: both
    come again, in order; every item is published once, as without the fault."""
    clean, dead_clean = _run(tmp_path / "clean", prefetch=True)
    faulty, dead_faulty = _run(tmp_path / "faulty", prefetch=True, flush_fault_at=3)
    assert _decided(faulty) == _decided(clean)
    assert _decided(dead_faulty) == _decided(dead_clean)


def test_standard_input_is_never_polled_ahead(tmp_path: Path) -> None:
    from monitor.sources.file import FileSource

    (tmp_path / "news.jsonl").write_text("{}\n")
    source = FileSource(str(tmp_path / "news.jsonl"))
    assert source.replayable
    source.close()
    assert not FileSource("-").replayable  # a batch read ahead from it could never be read again

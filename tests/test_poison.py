"""Poison-message immunity: whatever one message does, it costs that message (a dead letter with the
reason and the stage) and nothing else. Each case here once stopped or stalled the daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.errors import InvalidItem
from monitor.retrieval.embedded import EmbeddedHistory
from monitor.schema import parse_item
from monitor.text import normalise_edge

T = "2026-11-02T09:00:00Z"


def item(i: str, headline: str, **extra) -> bytes:
    return json.dumps({"id": i, "published_at": T, "headline": headline, **extra}).encode()


SURROGATE = b'{"id": "p2", "published_at": "2026-11-02T09:00:00Z", "headline": "Cut inside an emoji \\ud83d"}'
DEEP = (
    b'{"id": "p4", "published_at": "2026-11-02T09:00:00Z", "headline": "deep", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
)
LONG_ID = item("\u0800" * 200, "an id of 200 characters and 600 bytes")


def test_a_lone_surrogate_is_repaired_at_the_edge_and_the_document_says_so() -> None:
    parsed = parse_item(SURROGATE)
    assert parsed.headline == "Cut inside an emoji \ufffd" and parsed.repaired == ("headline",)
    assert parsed.to_json()["repaired"] == ["headline"]
    assert parse_item(item("ok", "Plain headline")).repaired == ()
    # NFC, and control characters dropped, in every text field; tickers too
    body = parse_item(item("n", "Cafe\u0301 ok", body="a\x00b\nc", tickers=["ab\ud800"]))
    assert (body.headline, body.body, body.tickers, body.repaired) == (
        "Café ok",
        "ab\nc",
        ("AB\ufffd",),
        ("headline", "body", "tickers"),
    )


def test_ids_are_never_repaired_and_must_fit_elasticsearch() -> None:
    with pytest.raises(InvalidItem, match="bytes in UTF-8"):
        parse_item(LONG_ID)  # 200 characters (under the 256 limit), 600 bytes (over Elasticsearch's 512)
    with pytest.raises(InvalidItem, match="bytes in UTF-8"):
        parse_item(item("\u4e00" * 180, "180 CJK characters are 540 bytes"))
    with pytest.raises(InvalidItem, match="lone surrogates"):
        parse_item(b'{"id": "a\\udc00", "published_at": "2026-11-02T09:00:00Z", "headline": "h"}')
    with pytest.raises(InvalidItem, match="out of range"):
        parse_item(item("t", "h").replace(T.encode(), b"0001-01-01T00:00:00+01:00"))


def test_normalise_edge_is_idempotent() -> None:
    for text in ["\ud800x", "e\u0301", "\x7f\x9fz", "ok", "\u212b"]:
        once, _ = normalise_edge(text)
        assert normalise_edge(once) == (once, False)


@pytest.fixture
def pipeline():
    from monitor.model_artifact import ModelArtifact
    from monitor.pipeline import PipelineSettings, ScoringPipeline
    from monitor.resources import shipped_model
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()), threads=1)
    return ScoringPipeline(scorer, EmbeddedHistory(), PipelineSettings("scored", "dlq", related_method="bm25"))


def messages(values: list[bytes]):
    from monitor.sources.base import Message

    return [Message("news", 0, i, v) for i, v in enumerate(values)]


def test_one_item_that_breaks_the_scorer_costs_only_that_item(pipeline, monkeypatch) -> None:
    real = pipeline.scorer.encode

    def fragile(texts):  # fault injection: the tokenizer's TypeError on one text, as \ud800 once did
        if any("poison" in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return real(texts)

    monkeypatch.setattr(pipeline.scorer, "encode", fragile)
    result = pipeline.process(
        messages([item("p1", "Acme beats estimates"), item("p2", "poison here"), item("p3", "Globex misses")])
    )
    assert [d["id"] for d in result.documents] == ["p1", "p3"]
    [dead] = result.dead
    headers = dict(dead.headers)
    assert (
        headers["bearwatch.stage"] == b"score"
        and b"TypeError" in headers["bearwatch.error"]
        and headers["bearwatch.source.offset"] == b"1"
    )


def test_one_item_that_breaks_the_heads_costs_only_that_item(pipeline, monkeypatch) -> None:
    real = pipeline.scorer.finish

    def fragile(texts, raw, groups=None, memory=None):  # fault injection: a head that fails on one item
        if any("poison" in t for t in texts):
            raise FloatingPointError("overflow in the head")
        return real(texts, raw, groups, memory)

    monkeypatch.setattr(pipeline.scorer, "finish", fragile)
    result = pipeline.process(
        messages([item("h1", "Acme beats estimates"), item("h2", "poison here"), item("h3", "Globex misses")])
    )
    assert [d["id"] for d in result.documents] == ["h1", "h3"]
    [dead] = result.dead
    assert (
        dict(dead.headers)["bearwatch.source.offset"] == b"1"
        and b"FloatingPointError" in dict(dead.headers)["bearwatch.error"]
    )


def test_a_document_that_cannot_be_built_is_dead_lettered(pipeline, monkeypatch) -> None:
    real = pipeline._document

    def broken(message, *args):
        if message.offset == 0:
            raise ValueError("cannot build")
        return real(message, *args)

    monkeypatch.setattr(pipeline, "_document", broken)
    result = pipeline.process(messages([item("a", "Acme slumps"), item("b", "Globex rises")]))
    assert [d["id"] for d in result.documents] == ["b"] and len(result.scored) == 1
    assert dict(result.dead[0].headers)["bearwatch.stage"] == b"document"


def test_documents_the_store_refuses_become_dead_letters_and_nothing_else_moves(pipeline) -> None:
    result = pipeline.process(
        messages([item("a", "Acme slumps"), item("b", "Globex rises"), item("c", "Initech flat")])
    )
    result.reject({1: "Elasticsearch refused the document (400 mapper_parsing_exception: x)"}, "index")
    assert [d["id"] for d in result.documents] == ["a", "c"] and [m.offset for m in result.messages] == [0, 2]
    assert [json.loads(r.value)["id"] for r in result.scored] == ["a", "c"]
    assert dict(result.dead[0].headers)["bearwatch.source.offset"] == b"1"


def test_the_embedded_default_takes_every_poison_case_the_daemon_dead_letters(tmp_path: Path) -> None:
    feed = tmp_path / "poison.jsonl"
    feed.write_bytes(
        b"\n".join(
            [
                item("p1", "Acme beats estimates"),
                SURROGATE,
                item("p3", "Globex misses"),
                DEEP,
                LONG_ID,
                b'{"id": "p6", "published_at": "2026-11-02T09:00:00Z", "headline": "bad bytes \xed\xa0\x80"}',
            ]
        )
        + b"\n"
    )
    out = tmp_path / "out"
    for resume in ([], ["--resume"]):
        run = subprocess.run(
            [sys.executable, "-m", "bearwatch", "demo", "--input", str(feed), "--out", str(out), *resume],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    scored = [
        json.loads(line)["value"]
        for line in (out / "bearwatch.news.scored.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    dead = [json.loads(line) for line in (out / "bearwatch.news.dlq.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["id"] for s in scored] == ["p1", "p2", "p3"]
    assert sorted(int(d["headers"]["bearwatch.source.offset"]) for d in dead) == [3, 4, 5]
    assert all("base64" in d["value"] or d["value"] for d in dead)
    history = list(EmbeddedHistory(out / "history").documents())
    assert {d["id"]: d.get("repaired") for d in history}["p2"] == ["headline"]


def test_a_retried_batch_publishes_each_dead_letter_once(tmp_path: Path, monkeypatch) -> None:
    """The store fails twice (an outage), then works: the dead letters of the batch are published once."""
    from bearwatch.daemon import build_embedded_app
    from monitor.errors import StoreUnavailable
    from monitor.resources import shipped_model
    from monitor.settings import load_settings

    feed = tmp_path / "in.jsonl"
    feed.write_bytes(b"\n".join([item("a", "Acme slumps"), b"not json", item("b", "Globex rises"), b"{}"]) + b"\n")
    settings = load_settings(env={"BEARWATCH_MODEL_PATH": str(shipped_model())})
    settings = replace(settings, monitor=replace(settings.monitor, retry_initial_seconds=0.01, retry_max_seconds=0.02))
    app = build_embedded_app(settings, str(feed), tmp_path / "out")
    real, failures = app.store.flush, []

    def flaky():
        if len(failures) < 2:
            failures.append(1)
            app.store._pending = []
            raise StoreUnavailable("injected outage")
        return real()

    monkeypatch.setattr(app.store, "flush", flaky)
    app.run(idle_timeout_s=0)
    dead = (tmp_path / "out" / "bearwatch.news.dlq.jsonl").read_text().splitlines()
    assert len(failures) == 2 and len(dead) == 2


@pytest.mark.services
def test_elasticsearch_refusals_are_per_document_and_a_refused_request_is_split(unique_name) -> None:
    from tests.conftest import es_history
    from tests.test_history_contract import doc

    good = [doc(f"g{i}", f"Good headline {i}", i) for i in range(5)]
    long_id = {**doc("x", "An id Elasticsearch refuses", 1), "id": "\u0800" * 200}  # 600 bytes: the whole bulk fails
    wrong = {**doc("w", "A value the mapping refuses", 2), "published_at": "not a date"}  # one item of the bulk fails
    with es_history(unique_name, embedding_dims=8, refresh="wait_for") as make:
        store = make()
        store.add([good[0], long_id, good[1], wrong, *good[2:]])
        refused = store.flush()
        assert sorted(refused) == [1, 3]
        assert "action_request_validation_exception" in refused[1] and "400" in refused[3]
        assert set(store.stored([g["id"] for g in good])) == {g["id"] for g in good}

"""The embedded history store (SQLite with an in-memory look-back window): the same answers as a
brute-force reference over everything stored, whatever the write and query order; durable; a
document that cannot be stored is refused alone; a full disk is a clear error."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import monitor.retrieval.embedded as embedded
from monitor.errors import StoreUnavailable
from monitor.retrieval.embedded import EmbeddedHistory
from monitor.retrieval.history import BM25_B, BM25_K1, TICKER_BOOST, HistoryQuery, tokens
from monitor.schema import format_time, parse_stored_time
from monitor.text import dedup_key

T0 = datetime(2015, 1, 1, tzinfo=timezone.utc)
WORDS = "acme globex shares plunge rise profit warning guidance cut upgrade downgrade fed rates oil the a rt".split()
TICKERS = ["ACME", "GBX", "INIT", "UMB"]
LOOKBACK = timedelta(hours=72)


def make_doc(rng: random.Random, i: int, when: datetime, dims: int = 4) -> dict:
    headline = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))
    vector = np.array([rng.gauss(0, 1) for _ in range(dims)])
    return {
        "id": f"d{i}",
        "headline": headline,
        "published_at": format_time(when),
        "tickers": rng.sample(TICKERS, rng.randint(0, 2)),
        "dedup_key": dedup_key(headline),
        "duplicate_of": None,
        "content_hash": str(i),
        "embedding": [float(x) for x in vector / np.linalg.norm(vector)],
    }


def reference(docs: dict[str, dict], q: HistoryQuery, k: int, method: str) -> list[tuple[str, float]]:
    """Related history computed the obvious way, over every stored document."""
    n = len(docs)
    lengths = {i: len(tokens(d["headline"])) for i, d in docs.items()}
    avg = sum(lengths.values()) / n
    df: Counter = Counter(t for d in docs.values() for t in set(tokens(d["headline"])))
    since, until = q.published_at - LOOKBACK, q.published_at
    scores: dict[str, float] = {}
    for i, d in docs.items():
        published = parse_stored_time(d["published_at"])
        if i == q.id or d["dedup_key"] == q.dedup_key or not since <= published < until:
            continue
        score, hit = 0.0, False
        if method in ("bm25", "both"):
            counts = Counter(tokens(d["headline"]))
            for t in set(tokens(q.text)):
                if counts[t]:
                    idf = math.log1p((n - df[t] + 0.5) / (df[t] + 0.5))
                    tf = counts[t]
                    score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[i] / avg))
                    hit = True
        if method in ("knn", "both") and q.vector is not None:
            score += (1.0 + float(np.asarray(d["embedding"], np.float32) @ q.vector)) / 2.0
            hit = True
        if hit:
            if method in ("bm25", "both") and set(q.tickers) & set(d["tickers"]):
                score += TICKER_BOOST
            scores[i] = score
    ranked = sorted(scores.items(), key=lambda r: (-r[1], docs[r[0]]["published_at"], r[0]))
    return ranked[:k]


def query_for(rng: random.Random, when: datetime, i: int) -> HistoryQuery:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
    vector = np.array([rng.gauss(0, 1) for _ in range(4)], dtype=np.float32)
    return HistoryQuery(
        f"q{i}",
        text,
        when,
        dedup_key(text),
        tuple(rng.sample(TICKERS, rng.randint(0, 2))),
        vector / np.linalg.norm(vector),
    )


def check(store: EmbeddedHistory, docs: dict[str, dict], queries: list[HistoryQuery], method: str, k: int = 4):
    got = store.related(queries, k, LOOKBACK, method)
    for q, related in zip(queries, got):
        want = reference(docs, q, k, method)
        assert [r.id for r in related] == [i for i, _ in want], (q, method)
        assert np.allclose(
            [r.score for r in related], [s for _, s in want], rtol=1e-6, atol=1e-6
        )  # float32 dot products
        for r in related:
            assert r.headline == docs[r.id]["headline"] and r.published_at == docs[r.id]["published_at"]


@pytest.mark.parametrize("seed", range(4))
def test_related_history_equals_a_brute_force_reference_whatever_the_order(seed: int, tmp_path: Path) -> None:
    """A stream in time order with stragglers, corrections and batches spread over days; queries
    in the stream's present, in its past (the window is rebuilt) and across several windows."""
    rng = random.Random(seed)
    store = EmbeddedHistory(tmp_path / "h")
    docs: dict[str, dict] = {}
    clock, i = T0, 0
    for batch in range(30):
        written = []
        for _ in range(rng.randint(5, 40)):
            clock += timedelta(minutes=rng.expovariate(1 / 10))
            when = clock - timedelta(hours=rng.uniform(0, 100)) if rng.random() < 0.1 else clock  # stragglers
            written.append(make_doc(rng, i, when))
            i += 1
        if docs and rng.random() < 0.3:  # a correction: a stored id with new text
            again = make_doc(rng, int(rng.choice(list(docs))[1:]), clock - timedelta(hours=rng.uniform(0, 80)))
            written.append(again)
        store.add(written)
        assert store.flush() == {}
        docs.update((d["id"], d) for d in written)
        queries = [query_for(rng, clock + timedelta(minutes=rng.uniform(0, 30)), j) for j in range(5)]
        if batch % 5 == 4:  # back in time: the window is rebuilt there, and again for the present
            queries += [query_for(rng, clock - timedelta(days=rng.uniform(1, 20)), 5)]
        if batch % 10 == 9:  # a batch spread over a month: several windows in one call
            queries += [query_for(rng, T0 + timedelta(days=rng.uniform(0, 30)), j) for j in range(6, 12)]
        check(store, docs, queries, rng.choice(["bm25", "knn", "both"]))
    # rebuilt where the queries jumped in time (about 35 times), otherwise extended and updated by the writes
    assert 3 < store.window_loads < 60, store.window_loads
    assert len(store) == len(docs)
    assert {d["id"] for d in store.documents()} == set(docs)
    for method in ("bm25", "knn", "both"):
        check(store, docs, [query_for(rng, clock - timedelta(hours=h), int(h)) for h in range(0, 400, 7)], method)


def test_a_reopened_store_reads_nothing_wholesale_and_answers_the_same(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = EmbeddedHistory(tmp_path / "h")
    docs = [make_doc(rng, i, T0 + timedelta(minutes=13 * i)) for i in range(300)]
    store.add(docs)
    store.flush()
    queries = [query_for(rng, T0 + timedelta(hours=h), h) for h in range(0, 70, 5)]
    before = store.related(queries, 3, LOOKBACK, "both")
    store.close()
    again = EmbeddedHistory(tmp_path / "h")
    assert again._window is None and again.window_loads == 0 and len(again) == 300
    assert again.related(queries, 3, LOOKBACK, "both") == before
    assert [d["id"] for d in again.documents()] == [d["id"] for d in docs]  # publication order
    assert "embedding" not in again.stored(["d5"])["d5"]  # the vector lives in its own column


def test_without_vectors_knn_finds_nothing_and_nothing_is_stored_for_it(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = EmbeddedHistory(tmp_path / "h", vectors=False)
    store.add([make_doc(rng, i, T0 + timedelta(minutes=i)) for i in range(20)])
    store.flush()
    q = query_for(rng, T0 + timedelta(hours=1), 0)
    assert store.related([q], 5, LOOKBACK, "knn") == [[]]
    (blobs,) = (
        sqlite3.connect(tmp_path / "h" / "history.sqlite")
        .execute("SELECT count(*) FROM docs WHERE embedding IS NOT NULL")
        .fetchone()
    )
    assert blobs == 0


def test_the_previous_versions_history_file_is_imported_once(tmp_path: Path) -> None:
    rng = random.Random(5)
    folder = tmp_path / "h"
    folder.mkdir()
    docs = [make_doc(rng, i, T0 + timedelta(minutes=i)) for i in range(2500)]
    (folder / "history.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs) + '{"id": "torn', "utf-8")
    store = EmbeddedHistory(folder)
    assert len(store) == 2500 and not (folder / "history.jsonl").exists()
    assert (folder / "history.jsonl.imported").exists()
    assert store.stored(["d42"])["d42"]["headline"] == docs[42]["headline"]


def test_a_document_that_cannot_be_stored_is_refused_alone(monkeypatch) -> None:
    rng = random.Random(1)
    store = EmbeddedHistory()
    good = make_doc(rng, 1, T0)
    store.add([good, {**make_doc(rng, 2, T0), "published_at": "not a time"}, {**make_doc(rng, 3, T0), "x": {1, 2}}])
    refused = store.flush()
    assert set(refused) == {1, 2} and all("refused" in r for r in refused.values())
    assert len(store) == 1 and set(store.stored(["d1", "d2", "d3"])) == {"d1"}
    monkeypatch.setattr(embedded, "_SEQ_BITS", 1)  # two row ids a millisecond: the third item has none
    crowded = [make_doc(rng, 10 + i, T0 + timedelta(days=1)) for i in range(3)]
    store.add(crowded)
    assert list(store.flush()) == [2] and len(store) == 3


def test_a_failed_batch_leaves_the_previous_state(monkeypatch) -> None:
    rng = random.Random(2)
    store = EmbeddedHistory()
    store.add([make_doc(rng, i, T0 + timedelta(minutes=i)) for i in range(10)])
    store.flush()
    q = query_for(rng, T0 + timedelta(hours=2), 0)
    before = store.related([q], 5, LOOKBACK, "bm25")
    real = store._write
    calls = []

    def failing(row, n, total):
        calls.append(row)
        if len(calls) == 3:
            raise sqlite3.OperationalError("database is locked")
        return real(row, n, total)

    monkeypatch.setattr(store, "_write", failing)
    store.add([make_doc(rng, 100 + i, T0 + timedelta(minutes=30 + i)) for i in range(5)])
    with pytest.raises(StoreUnavailable, match="database is locked"):
        store.flush()
    assert len(store) == 10 and store.stored(["d100"]) == {}
    assert store.related([q], 5, LOOKBACK, "bm25") == before


def test_a_file_size_limit_is_a_clear_out_of_space_error(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import random, resource
        from datetime import timedelta
        from pathlib import Path
        from monitor.errors import OutOfSpace
        from monitor.retrieval.embedded import EmbeddedHistory
        from tests.test_embedded_history import T0, make_doc
        store = EmbeddedHistory(Path({str(tmp_path / "h")!r}))
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        rng, i = random.Random(0), 0
        try:
            while True:
                store.add([make_doc(rng, i + j, T0 + timedelta(minutes=i + j), dims=64) for j in range(50)])
                store.flush()
                i += 50
        except OutOfSpace as exc:
            print("written", len(store), "|", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "File too large" in result.stdout and "resumes after the last batch" in result.stdout
    written = int(result.stdout.split()[1])
    assert written > 0 and written % 50 == 0  # whole batches only
    assert len(EmbeddedHistory(tmp_path / "h")) == written

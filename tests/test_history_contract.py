"""One contract, two history stores: the embedded default and Elasticsearch must agree."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from monitor.retrieval.embedded import EmbeddedHistory
from monitor.retrieval.history import DedupQuery, HistoryQuery
from monitor.schema import format_time
from monitor.text import dedup_key

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)


def _vec(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=8)
    return [float(x) for x in v / np.linalg.norm(v)]


def doc(i: str, headline: str, minutes: int, tickers=(), seed=0, duplicate_of=None) -> dict:
    return {
        "id": i,
        "headline": headline,
        "published_at": format_time(T0 + timedelta(minutes=minutes)),
        "tickers": list(tickers),
        "dedup_key": dedup_key(headline),
        "content_hash": i,
        "duplicate": duplicate_of is not None,
        "duplicate_of": duplicate_of,
        "sentiment": "bearish",
        "topic": "Earnings",
        "model_version": "test",
        "embedding": _vec(seed),
    }


DOCS = [
    doc("a", "Acme shares plunge after profit warning", -50, ["ACME"], seed=1),
    doc("b", "Acme profit warning shocks investors", -40, ["ACME"], seed=2),
    doc("c", "Globex profit warning hits shares", -30, ["GBX"], seed=3),
    doc("d", "ACME shares tumble after profit-warning!", -20, ["ACME"], seed=4),  # near-duplicate of the query
    doc("e", "Acme profit warning, shares plunge further", 30, ["ACME"], seed=5),  # published after the query
    doc("f", "Acme profit warning recalled by analysts", -60 * 100, ["ACME"], seed=6),  # outside the look-back
    doc("q", "Acme shares tumble after profit warning", 0, ["ACME"], seed=7),  # the query item itself
]
QUERY = HistoryQuery(
    "q",
    "Acme shares tumble after profit warning",
    T0,
    dedup_key("Acme shares tumble after profit warning"),
    ("ACME",),
    np.array(_vec(7), dtype=np.float32),
)


def _store(request, unique_name, **es_options):
    if request.param == "embedded":
        yield EmbeddedHistory()
        return
    from tests.conftest import es_history

    with es_history(unique_name, embedding_dims=8, **es_options) as make:
        yield make()


@pytest.fixture(params=["embedded", pytest.param("elasticsearch", marks=pytest.mark.services)])
def store(request, unique_name):
    yield from _store(request, unique_name, refresh="wait_for")


@pytest.fixture(params=["embedded", pytest.param("elasticsearch", marks=pytest.mark.services)])
def unrefreshed_store(request, unique_name):
    """The production configuration (writes without refresh), on an index that never refreshes by itself."""
    yield from _store(request, unique_name, self_refreshing=False)


def load(store) -> None:
    store.add(DOCS)
    store.flush()


@pytest.mark.parametrize("method", ["bm25", "knn", "both"])
def test_related_respects_leakage_rules(store, method: str) -> None:
    load(store)
    related = store.related([QUERY], k=5, lookback=timedelta(hours=24), method=method)[0]
    ids = [r.id for r in related]
    assert "q" not in ids and "d" not in ids and "e" not in ids and "f" not in ids
    assert set(ids) <= {"a", "b", "c"}
    if method != "knn":
        assert ids[0] in ("a", "b") and set(ids[:2]) == {"a", "b"}  # same ticker and words rank first


def test_stored_returns_documents_by_id(store) -> None:
    load(store)
    got = store.stored(["a", "missing", "c"])
    assert set(got) == {"a", "c"} and got["a"]["content_hash"] == "a"


def test_originals_finds_earlier_same_text_within_window(store) -> None:
    load(store)
    far = T0 + timedelta(days=5)
    out = store.originals(
        [
            DedupQuery("new", dedup_key("ACME shares plunge after profit-warning"), T0),
            DedupQuery("late", dedup_key("Acme shares plunge after profit warning"), far),
            DedupQuery("other", dedup_key("Nothing like it"), T0),
        ],
        window=timedelta(hours=24),
    )
    assert out[0].id == "a" and out[0].published_at == T0 - timedelta(minutes=50) and out[1] is None and out[2] is None
    # "d" and "q" share a key; excluding "d" (the caller decides about it) leaves "q"
    tumble = dedup_key("Acme shares tumble after profit warning")
    again = store.originals(
        [DedupQuery("new", tumble, T0), DedupQuery("new", tumble, T0, exclude=("d",))], window=timedelta(hours=24)
    )
    assert again[0].id == "d" and again[1].id == "q"


def test_originals_reads_its_own_writes_before_any_refresh(unrefreshed_store) -> None:
    """Writes do not wait for a refresh; the dedup lookup must still see the previous batch."""
    store = unrefreshed_store
    store.originals([DedupQuery("x", "nothing", T0)], window=timedelta(hours=1))  # the first lookup refreshes
    store.add(
        [
            doc("a", "Acme shares plunge after profit warning", -50),
            doc("b", "Acme shares plunge after profit warning!", -10, duplicate_of="a"),
        ]
    )
    store.flush()
    out = store.originals(
        [
            DedupQuery("q", dedup_key("ACME shares plunge after profit warning"), T0),
            DedupQuery("r", dedup_key("ACME shares plunge"), T0),
        ],
        window=timedelta(hours=24),
    )
    assert out[0].id == "a" and out[0].root == "a" and out[1] is None
    store.add([doc("a", "Acme shares rise", -50)])  # a new version of "a" under another key
    store.flush()
    out = store.originals(
        [DedupQuery("q", dedup_key("ACME shares plunge after profit warning"), T0)], window=timedelta(hours=24)
    )
    assert out[0].id == "b" and out[0].root == "a"


def test_writing_twice_keeps_one_document(store) -> None:
    load(store)
    load(store)
    assert len(store.stored([d["id"] for d in DOCS])) == len(DOCS)

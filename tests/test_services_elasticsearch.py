"""The real Elasticsearch: an index with a dense_vector field, bulk indexing, BM25 and kNN queries."""

from __future__ import annotations

import pytest
from elasticsearch import NotFoundError, helpers

pytestmark = pytest.mark.services

DOCS = [
    ("a", "Acme Corp shares plunge after profit warning", [1.0, 0.0, 0.0, 0.0]),
    ("b", "Globex raises dividend as quarterly revenue beats estimates", [0.0, 1.0, 0.0, 0.0]),
    ("c", "Central bank holds rates steady, signals patience", [0.0, 0.0, 1.0, 0.0]),
    ("d", "Initech recalls product line, shares slide", [0.7, 0.0, 0.0, 0.7]),
]


@pytest.fixture
def index(es_client, unique_name: str):
    es_client.indices.create(
        index=unique_name,
        mappings={
            "properties": {
                "headline": {"type": "text"},
                "embedding": {"type": "dense_vector", "dims": 4, "index": True, "similarity": "cosine"},
            }
        },
    )
    yield unique_name
    es_client.indices.delete(index=unique_name, ignore_unavailable=True)


def test_bulk_bm25_knn_and_delete(es_client, index: str) -> None:
    ok, errors = helpers.bulk(
        es_client,
        ({"_index": index, "_id": i, "headline": h, "embedding": v} for i, h, v in DOCS),
        refresh="wait_for",
    )
    assert ok == len(DOCS) and not errors

    bm25 = es_client.search(index=index, query={"match": {"headline": "dividend revenue"}}, size=2)
    assert bm25["hits"]["hits"][0]["_id"] == "b"

    knn = es_client.search(
        index=index,
        knn={"field": "embedding", "query_vector": [1.0, 0.0, 0.0, 0.1], "k": 2, "num_candidates": 10},
        size=2,
    )
    assert [h["_id"] for h in knn["hits"]["hits"]] == ["a", "d"]

    es_client.indices.delete(index=index)
    with pytest.raises(NotFoundError):
        es_client.indices.get(index=index)


def test_the_news_index_refreshes_at_the_configured_interval(es_client, unique_name: str) -> None:
    """bearwatch's news index is created with elasticsearch.refresh_seconds as its refresh interval,
    and an existing one takes a changed setting at the next start; the other indices keep the default."""
    from monitor.elastic.client import ensure_indices
    from monitor.indices import mappings
    from monitor.settings import ElasticsearchSettings

    def interval(name: str) -> str | None:
        index = settings.index(name)
        return es_client.indices.get_settings(index=index)[index]["settings"]["index"].get("refresh_interval")

    settings = ElasticsearchSettings(url=es_client.transport.node_pool.get().base_url, index_prefix=unique_name)
    try:
        ensure_indices(es_client, settings, embedding_dims=4)
        assert interval("news") == "10000ms" and interval("alerts") is None
        settings = ElasticsearchSettings(url=settings.url, index_prefix=unique_name, refresh_seconds=2.5)
        ensure_indices(es_client, settings, embedding_dims=4)
        assert interval("news") == "2500ms"
    finally:
        es_client.indices.delete(index=",".join(settings.index(n) for n in mappings()), ignore_unavailable=True)

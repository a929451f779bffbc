"""The retrieval memory on Elasticsearch: the labels index, with each label's embedding by the
serving model (see monitor/retrieval/memory.py for the contract).

A label document gains ``embedding`` (dense_vector), ``embedding_model`` (the model version that
computed it), ``dedup_key``, ``model_probabilities`` and ``embedded_at``/``embedded_by`` when a
scoring daemon syncs it. A new label or a correction (which rewrites the document) has no
embedding for the current model, and neither has any label after a model change: :meth:`sync`
finds them with one search and writes their embeddings back, guarded by the sequence number it
read (a correction written meanwhile is embedded at the next sync), so the index always holds the
memory of record, shared by every scoring daemon.

Two ways to search it, both exact and both ranking as the in-process memory does (similarity
rounded to 1e-6, then item id), so all give the same neighbours with the same weights:

- ``mirror`` (the default): each daemon keeps the embedded labels of its model version in memory,
  loaded once at start (or model change) and then kept current from the same sync: what it embeds
  itself goes straight in, what other daemons embedded comes with one search per batch (labels
  embedded in the last ``overlap_s`` by anyone else). Searching is then a matrix-vector product
  per item, no request.
- ``knn``: one brute-force kNN request per item (the vector field is "flat": no approximate graph
  to build or merge), all of a batch's in one ``msearch``. Nothing is held in the daemon, but each
  item costs Elasticsearch a request: about 2 ms on 2 cores (docs/training.md, "Retrieval memory").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from monitor.elastic.client import translated
from monitor.errors import StoreUnavailable
from monitor.retrieval.memory import (
    Embedder,
    MemoryEntry,
    MemoryIndex,
    MemoryQuery,
    embed_each,
    millis,
    rank,
    similarity,
)
from monitor.retrieval.vectors import Neighbour
from monitor.schema import format_time, parse_stored_time
from monitor.text import dedup_key

log = logging.getLogger("bearwatch.memory")

SEARCH_MODES = ("mirror", "knn")
_LABEL = ["item_id", "text", "sentiment", "topic", "published_at"]
_SOURCE = [*_LABEL, "model_probabilities"]


def _embedded_by(version: str) -> list[dict]:
    return [{"term": {"embedding_model": version}}, {"exists": {"field": "embedding"}}]


def _entry(source: dict) -> MemoryEntry:
    published = source.get("published_at")
    return MemoryEntry(
        source["item_id"],
        source["text"],
        source.get("sentiment"),
        source.get("topic"),
        millis(parse_stored_time(published)) if published else None,
        dedup_key(source["text"]),
    )


class ElasticsearchMemory:
    def __init__(
        self,
        client,
        index: str,
        search: str = "mirror",
        sync_chunk: int = 256,
        max_rounds: int = 400,
        overlap_s: float = 30.0,
    ) -> None:
        if search not in SEARCH_MODES:
            raise ValueError(f"memory search must be one of {SEARCH_MODES}, not {search!r}")
        self.client, self.index, self.mode = client, index, search
        self.sync_chunk = sync_chunk
        self.max_rounds = max_rounds  # bounds one sync (100k labels): the rest waits for the next batch
        self.overlap = timedelta(seconds=overlap_s)  # how late another daemon's write may become visible
        self.replica = uuid.uuid4().hex[:12]  # this daemon, in `embedded_by`
        self.mirror = MemoryIndex()
        self._mirror_version: str | None = None
        self._seen_until: datetime | None = None  # others' embeddings up to here are in the mirror

    # -- keeping the index's embeddings current ------------------------------------------------

    def sync(self, embedder: Embedder) -> int:
        """Embed what the serving model has not embedded yet, then (mirror) bring the mirror up to date."""
        version = embedder.version
        if self.mode == "mirror" and version != self._mirror_version:
            self._load_mirror(version)
        done = self._embed_missing(embedder)
        if self.mode == "mirror":
            self._follow_others(version)
        return done

    def _embed_missing(self, embedder: Embedder) -> int:
        version, done = embedder.version, 0
        for _ in range(self.max_rounds):
            with translated("memory sync"):
                hits = self.client.search(
                    index=self.index,
                    query={"bool": {"must_not": [{"term": {"embedding_model": version}}]}},
                    size=self.sync_chunk,
                    source=_LABEL,
                    seq_no_primary_term=True,
                    sort=[{"item_id": "asc"}],
                )["hits"]["hits"]
            if not hits:
                return done
            now = format_time(datetime.now(timezone.utc))
            actions: list[dict] = []
            embedded: dict[str, tuple] = {}
            for hit, result in zip(hits, embed_each(embedder, [h["_source"]["text"] for h in hits])):
                fields: dict = {
                    "embedding_model": version,
                    "dedup_key": dedup_key(hit["_source"]["text"]),
                    "embedded_at": now,
                    "embedded_by": self.replica,
                }
                if isinstance(result, str):
                    log.warning("label %s stays out of the memory: %s", hit["_id"], result)
                    fields["memory_error"] = result
                else:
                    vector, probabilities = result
                    fields["embedding"] = [float(x) for x in np.asarray(vector, dtype=np.float32)]
                    fields["model_probabilities"] = {t: [float(x) for x in p] for t, p in probabilities.items()}
                    embedded[hit["_id"]] = (_entry(hit["_source"]), fields["embedding"], fields["model_probabilities"])
                guard = {"if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}
                actions += [{"update": {"_index": self.index, "_id": hit["_id"], **guard}}, {"doc": fields}]
            with translated("memory sync"):
                result = self.client.bulk(operations=actions, refresh="wait_for")
            for item in result["items"]:
                outcome = item["update"]
                if outcome.get("status") == 200:
                    done += 1
                    if self.mode == "mirror":
                        if outcome["_id"] in embedded:
                            self.mirror.put(*embedded[outcome["_id"]])
                        else:
                            self.mirror.remove(outcome["_id"])  # corrected into a text the model cannot take
                elif outcome.get("status") not in (404, 409):  # deleted, or corrected meanwhile: next sync
                    raise StoreUnavailable(
                        f"Elasticsearch refused the embedding of label {outcome['_id']}: {outcome.get('error')}"
                    )
            if len(hits) < self.sync_chunk:
                return done
        return done

    def _scan(self, query: dict) -> list[dict]:
        """Every matching label document with its embedding, in item-id pages."""
        docs: list[dict] = []
        after = None
        while True:
            with translated("memory load"):
                hits = self.client.search(
                    index=self.index,
                    query=query,
                    size=1000,
                    source=[*_SOURCE, "embedding"],
                    sort=[{"item_id": "asc"}],
                    **({"search_after": after} if after else {}),
                )["hits"]["hits"]
            docs += [h["_source"] for h in hits]
            if len(hits) < 1000:
                return docs
            after = hits[-1]["sort"]

    def _load_mirror(self, version: str) -> None:
        started = datetime.now(timezone.utc)
        docs = self._scan({"bool": {"filter": _embedded_by(version)}})
        self.mirror.clear()
        for doc in docs:
            self.mirror.put(_entry(doc), doc["embedding"], doc.get("model_probabilities") or {})
        self._mirror_version, self._seen_until = version, started
        log.info("retrieval memory: %d labelled items embedded by %s loaded", len(docs), version)

    def _follow_others(self, version: str) -> None:
        """What other daemons embedded since the last look (and the overlap before it)."""
        assert self._seen_until is not None
        started = datetime.now(timezone.utc)
        query = {
            "bool": {
                "filter": [
                    {"term": {"embedding_model": version}},
                    {"range": {"embedded_at": {"gte": format_time(self._seen_until - self.overlap)}}},
                ],
                "must_not": [{"term": {"embedded_by": self.replica}}],
            }
        }
        for doc in self._scan(query):
            if doc.get("embedding"):
                self.mirror.put(_entry(doc), doc["embedding"], doc.get("model_probabilities") or {})
            else:
                self.mirror.remove(doc["item_id"])
        self._seen_until = started

    # -- searching ------------------------------------------------------------------------------

    def size(self, version: str) -> int:
        if self.mode == "mirror" and version == self._mirror_version:
            return len(self.mirror)
        with translated("memory count"):
            return self.client.count(index=self.index, query={"bool": {"filter": _embedded_by(version)}})["count"]

    def search(
        self, queries: Sequence[MemoryQuery], k: int, version: str, near_duplicate: float
    ) -> list[list[Neighbour]]:
        if self.mode == "mirror":
            if version != self._mirror_version:
                raise RuntimeError(f"memory searched for {version} before it was synced for it")
            return self.mirror.search(queries, k, near_duplicate)
        return self._knn(queries, k, version, near_duplicate)

    def _knn(
        self, queries: Sequence[MemoryQuery], k: int, version: str, near_duplicate: float
    ) -> list[list[Neighbour]]:
        """One msearch of exact kNN requests. Neighbours at least `near_duplicate` similar are dropped
        here (kNN filters only from below), so each request asks for more than k and, for the rare
        item that has more near-duplicates than that, again for more."""
        results: list[list[Neighbour] | None] = [None] * len(queries)
        fetch = [max(3 * k, k + 32)] * len(queries)
        while k and (todo := [i for i, r in enumerate(results) if r is None]):
            body: list[dict] = []
            for i in todo:
                body += [{"index": self.index}, self._request(queries[i], fetch[i], version)]
            with translated("memory search"):
                responses = self.client.msearch(searches=body)["responses"]
            for i, response in zip(todo, responses):
                if "error" in response:
                    raise StoreUnavailable(f"memory search failed: {response['error']}")
                hits = response["hits"]["hits"]
                kept = self._nearest(hits, k, near_duplicate)
                if len(kept) == k or len(hits) < fetch[i] or fetch[i] >= 10_000:
                    results[i] = kept
                else:
                    fetch[i] *= 4
        return [r or [] for r in results]

    @staticmethod
    def _nearest(hits: list[dict], k: int, near_duplicate: float) -> list[Neighbour]:
        """The k best of the candidates, in the in-process memory's order."""
        if not hits:
            return []
        scores = similarity(2.0 * np.array([h["_score"] for h in hits], dtype=np.float64) - 1.0)  # (1 + cos) / 2
        scores[scores >= near_duplicate] = -np.inf
        sources = [h["_source"] for h in hits]
        ids = np.array([s["item_id"] for s in sources], dtype=object)
        return [
            Neighbour(
                id=sources[col]["item_id"],
                text=sources[col]["text"],
                score=float(scores[col]),
                sentiment=sources[col].get("sentiment"),
                topic=sources[col].get("topic"),
                predicted={t: tuple(p) for t, p in (sources[col].get("model_probabilities") or {}).items()},
            )
            for col in rank(scores, ids, k)
        ]

    @staticmethod
    def _request(q: MemoryQuery, size: int, version: str) -> dict:
        filters = _embedded_by(version)
        if q.published_at is not None:  # undated labels are timeless; dated ones strictly earlier
            filters.append(
                {
                    "bool": {
                        "should": [
                            {"bool": {"must_not": [{"exists": {"field": "published_at"}}]}},
                            {"range": {"published_at": {"lt": format_time(q.published_at)}}},
                        ],
                        "minimum_should_match": 1,
                    }
                }
            )
        must_not: list[dict] = []
        if q.id is not None:
            must_not.append({"term": {"item_id": q.id}})
        if q.group is not None:
            must_not.append({"term": {"dedup_key": q.group}})
        return {
            "size": size,
            "knn": {
                "field": "embedding",
                "query_vector": [float(x) for x in np.asarray(q.vector, dtype=np.float32)],
                "k": size,
                "num_candidates": size,
                "filter": {"bool": {"filter": filters, "must_not": must_not}},
            },
            "_source": _SOURCE,
        }

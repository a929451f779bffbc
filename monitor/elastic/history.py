"""The history store on Elasticsearch: the scored-news index is also the retrieval history.

Reads are batched (one ``mget`` for ids, one ``msearch`` for dedup and related history per batch);
writes are bulk ``index`` operations with ``_id`` = item id, so a replayed batch overwrites the same
documents instead of adding new ones. Elasticsearch errors become :class:`StoreUnavailable` with
what was being done.

Writes do not wait for a refresh (that would cost up to a second per batch), so a search may not
see the last batches yet. The dedup lookup must: whether an item is a duplicate cannot depend on
how fast the previous batch became searchable, or a replay after a crash would decide it
differently and detection would count differently. So the store remembers what it wrote until it
has refreshed the index itself (at most every ``visible_after_s``: `elasticsearch.refresh_seconds`,
the news index's own refresh interval too), and answers dedup lookups from both. `related` history
may miss the last few seconds of items (up to that interval); that changes no decision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from monitor.elastic.client import call, translate
from monitor.errors import StoreUnavailable
from monitor.indices import NEWS
from monitor.records import ScoredItem
from monitor.retrieval.history import TICKER_BOOST, DedupQuery, HistoryQuery, Original, Related
from monitor.schema import format_time, parse_stored_time
from monitor.settings import ElasticsearchSettings

log = logging.getLogger("bearwatch.elasticsearch")
# What the dedup step reads back from a stored item (its vector and body stay on the server).
_SOURCE_FIELDS = ScoredItem.fields(
    "id",
    "headline",
    "published_at",
    "dedup_key",
    "content_hash",
    "duplicate",
    "duplicate_of",
    "sentiment",
    "topic",
    "model_version",
    "scored_at",
    "kafka",
)


class ElasticsearchHistory:
    def __init__(
        self,
        client,
        settings: ElasticsearchSettings,
        refresh: str | bool = False,
        visible_after_s: float | None = None,
    ) -> None:
        self.client = client
        self.index = settings.index(NEWS)
        self.refresh = refresh
        # as often as the index refreshes itself (elasticsearch.refresh_seconds) unless told otherwise
        self.visible_after_s = settings.refresh_seconds if visible_after_s is None else visible_after_s
        self._pending: list[dict] = []
        # Written since our last refresh, so perhaps not yet searchable: dedup key -> id -> Original,
        # and id -> dedup key. The first lookup refreshes too (a previous process's last writes).
        self._unrefreshed: dict[str, dict[str, Original]] = {}
        self._unrefreshed_key: dict[str, str] = {}
        self._refreshed_at: float | None = None

    def stored(self, ids: Sequence[str]) -> dict[str, dict]:
        if not ids:
            return {}
        response = call(
            "mget", self.client.mget, index=self.index, ids=list(dict.fromkeys(ids)), source_includes=_SOURCE_FIELDS
        )
        return {d["_id"]: d["_source"] for d in response["docs"] if d.get("found")}

    def originals(self, queries: Sequence[DedupQuery], window: timedelta) -> list[Original | None]:
        if not queries:
            return []
        self._refresh_if_due()
        searches: list[dict] = []
        for q in queries:
            searches += [
                {"index": self.index},
                {
                    "size": 1,
                    "_source": ["id", "published_at", "duplicate_of"],
                    "sort": [{"published_at": "asc"}, {"id": "asc"}],
                    "query": {
                        "bool": {
                            "filter": [
                                {"term": {"dedup_key": q.dedup_key}},
                                {
                                    "range": {
                                        "published_at": {
                                            "gte": format_time(q.published_at - window),
                                            "lte": format_time(q.published_at + window),
                                        }
                                    }
                                },
                            ],
                            "must_not": [{"ids": {"values": [q.id, *q.exclude]}}],
                        }
                    },
                },
            ]
        out = []
        for q, r in zip(queries, self._msearch("dedup lookup", searches)):
            found = [
                Original(
                    parse_stored_time(h["_source"]["published_at"]),
                    h["_source"]["id"],
                    h["_source"].get("duplicate_of"),
                )
                for h in r["hits"]["hits"]
            ]
            skip = {q.id, *q.exclude}
            found += [
                o
                for o in self._unrefreshed.get(q.dedup_key, {}).values()
                if o.id not in skip and abs(o.published_at - q.published_at) <= window
            ]
            out.append(min(found, default=None))
        return out

    def _refresh_if_due(self) -> None:
        """Refresh the index once what we wrote may have waited long enough; then searches see it all."""
        import time

        if self._refreshed_at is not None and time.monotonic() - self._refreshed_at < self.visible_after_s:
            return
        started = time.monotonic()
        call("refresh", self.client.indices.refresh, index=self.index)
        self._unrefreshed, self._unrefreshed_key, self._refreshed_at = {}, {}, started

    def _remember(self, documents: Sequence[dict]) -> None:
        for doc in documents:
            old_key = self._unrefreshed_key.get(doc["id"])
            if old_key is not None:  # rewritten (new content): the new version replaces the old one
                self._unrefreshed[old_key].pop(doc["id"], None)
            self._unrefreshed.setdefault(doc["dedup_key"], {})[doc["id"]] = Original(
                parse_stored_time(doc["published_at"]), doc["id"], doc.get("duplicate_of")
            )
            self._unrefreshed_key[doc["id"]] = doc["dedup_key"]

    def related(self, queries: Sequence[HistoryQuery], k: int, lookback: timedelta, method: str) -> list[list[Related]]:
        if not queries or k == 0:
            return [[] for _ in queries]
        searches = []
        for q in queries:
            searches += [{"index": self.index}, self._related_body(q, k, lookback, method)]
        return [
            [
                Related(
                    h["_source"]["id"],
                    float(h["_score"] or 0.0),
                    h["_source"]["headline"],
                    h["_source"]["published_at"],
                )
                for h in r["hits"]["hits"]
            ]
            for r in self._msearch("related-history search", searches)
        ]

    @staticmethod
    def _related_body(q: HistoryQuery, k: int, lookback: timedelta, method: str) -> dict:
        window = {
            "range": {
                "published_at": {"gte": format_time(q.published_at - lookback), "lt": format_time(q.published_at)}
            }
        }
        exclude = [{"ids": {"values": [q.id]}}, {"term": {"dedup_key": q.dedup_key}}]
        body: dict = {
            "size": k,
            "_source": ["id", "headline", "published_at"],
            "sort": [{"_score": "desc"}, {"published_at": "asc"}, {"id": "asc"}],
        }
        if method in ("bm25", "both"):
            should = [{"terms": {"tickers": list(q.tickers), "boost": TICKER_BOOST}}] if q.tickers else []
            # The headline goes in as text to match, never as query syntax (match, not query_string).
            body["query"] = {
                "bool": {
                    "must": [{"match": {"headline": {"query": q.text}}}],
                    "should": should,
                    "filter": [window],
                    "must_not": exclude,
                }
            }
        if method in ("knn", "both") and q.vector is not None:
            body["knn"] = {
                "field": "embedding",
                "query_vector": [float(x) for x in q.vector],
                "k": k,
                "num_candidates": max(50, 5 * k),
                "filter": {"bool": {"filter": [window], "must_not": exclude}},
            }
        if "query" not in body and "knn" not in body:
            body["query"] = {"match_none": {}}
        return body

    def _msearch(self, action: str, searches: list[dict]) -> list[dict]:
        response = call(action, self.client.msearch, searches=searches)
        for r in response["responses"]:
            if "error" in r:
                raise StoreUnavailable(
                    f"Elasticsearch {action} failed: {r['error'].get('type')}: {r['error'].get('reason', '')[:300]}"
                )
        return response["responses"]

    def add(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> dict[int, str]:
        """Write what was added; returns the documents Elasticsearch refused for good (by position
        in the order added → its reason). 429s, 5xx and connection errors are outages."""
        # Emptied whether or not the write succeeds: a failed batch is replayed and added again.
        pending, self._pending = self._pending, []
        if not pending:
            return {}
        refused = self._bulk(pending, 0)
        self._remember([doc for i, doc in enumerate(pending) if i not in refused])
        return refused

    def _bulk(self, docs: list[dict], base: int) -> dict[int, str]:
        from elasticsearch import ApiError, SerializationError, TransportError

        operations = []
        for doc in docs:
            operations += [{"index": {"_index": self.index, "_id": doc["id"]}}, doc]
        try:
            response = self.client.bulk(operations=operations, refresh=self.refresh)
        except (ApiError, SerializationError) as exc:
            status = exc.status_code if isinstance(exc, ApiError) else None
            if isinstance(exc, ApiError) and status not in (400, 413):
                raise translate("bulk index", exc) from exc
            # The request as a whole was refused (an _id over 512 bytes fails the whole bulk, a
            # document too large for the request): halve it until the culprit stands alone.
            if len(docs) == 1:
                what = getattr(exc, "error", None) or type(exc).__name__
                return {base: f"Elasticsearch refused the document ({status or 'client'} {what}): {_reason(exc)}"}
            mid = len(docs) // 2
            return {**self._bulk(docs[:mid], base), **self._bulk(docs[mid:], base + mid)}
        except TransportError as exc:
            raise translate("bulk index", exc) from exc
        if not response.get("errors"):
            return {}
        refused: dict[int, str] = {}
        outage = []
        for i, item in enumerate(response["items"]):
            result = item["index"]
            error = result.get("error")
            if not error:
                continue
            status = int(result.get("status", 0))
            reason = f"{error.get('type')}: {str(error.get('reason'))[:300]}"
            if status == 429 or status >= 500:
                outage.append(reason)
            else:  # this document can never be indexed as it is (a mapping conflict, a bad value)
                refused[base + i] = f"Elasticsearch refused the document ({status} {reason})"
        if outage:
            raise StoreUnavailable(
                f"Elasticsearch could not take {len(outage)} of {len(docs)} documents for now; first: {outage[0]}"
            )
        return refused


def _reason(exc: Exception) -> str:
    info = getattr(exc, "info", None)
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return str(info["error"].get("reason", ""))[:300]
    return str(exc)[:300]

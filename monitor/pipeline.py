"""The scoring stage's work on one batch: validate → dedup → score → related history → documents.

Takes messages and returns what to write; it writes nothing itself. The scorer and the history
store are injected, so the same code runs against Kafka + Elasticsearch and in the embedded default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from monitor.errors import ScoringError
from monitor.labels import SENTIMENT_LABELS
from monitor.retrieval.history import DedupQuery, HistoryQuery, HistoryStore
from monitor.schema import InvalidItem, NewsItem, format_time, parse_item
from monitor.scoring.onnx import OnnxScorer, Scores
from monitor.sinks.base import Record
from monitor.sources.base import Message
from monitor.text import dedup_key

log = logging.getLogger("bearwatch.pipeline")
STAGES = ("validate", "dedup", "score", "retrieve", "total")


@dataclass(frozen=True)
class PipelineSettings:
    scored_topic: str
    dlq_topic: str
    dedup_window: timedelta = timedelta(hours=24)
    related_k: int = 3
    related_method: str = "bm25"  # off | bm25 | knn | both
    lookback: timedelta = timedelta(hours=72)


@dataclass
class BatchResult:
    documents: list[dict] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)  # scored topic and dead letters
    dead_letters: int = 0
    duplicates: int = 0
    redelivered: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def dead_letter(message: Message, reason: str, stage: str, dlq_topic: str) -> Record:
    """The original bytes, untouched, with why and where they came from in the headers."""
    headers = (
        ("bearwatch.error", reason.encode("utf-8", "replace")[:1000]),
        ("bearwatch.stage", stage.encode()),
        ("bearwatch.source.topic", message.topic.encode()),
        ("bearwatch.source.partition", str(message.partition).encode()),
        ("bearwatch.source.offset", str(message.offset).encode()),
    )
    return Record(dlq_topic, message.value if message.value is not None else b"", message.key, headers)


def content_hash(item: NewsItem) -> str:
    return hashlib.blake2b(json.dumps(item.to_json(), sort_keys=True).encode(), digest_size=16).hexdigest()


class ScoringPipeline:
    def __init__(self, scorer: OnnxScorer, store: HistoryStore, settings: PipelineSettings) -> None:
        self.scorer = scorer
        self.store = store
        self.settings = settings

    def process(self, messages: Sequence[Message], now: datetime | None = None) -> BatchResult:
        result = BatchResult()
        t0 = time.perf_counter()
        valid: list[tuple[Message, NewsItem]] = []
        for message in messages:
            try:
                valid.append((message, parse_item(message.value, now)))
            except InvalidItem as exc:
                result.records.append(dead_letter(message, str(exc), "validate", self.settings.dlq_topic))
                result.dead_letters += 1
        t1 = time.perf_counter()
        to_score, flags = self._dedup(valid, result)
        t2 = time.perf_counter()
        scores, failed = self._score([item for _, item in to_score])
        for index, reason in failed.items():
            message, item = to_score[index]
            result.records.append(dead_letter(message, reason, "score", self.settings.dlq_topic))
            result.dead_letters += 1
        kept = [i for i in range(len(to_score)) if i not in failed]
        t3 = time.perf_counter()
        related = self._related([to_score[i][1] for i in kept], [scores.embedding[i] for i in kept] if scores else [])
        t4 = time.perf_counter()
        result.seconds = {"validate": t1 - t0, "dedup": t2 - t1, "score": t3 - t2, "retrieve": t4 - t3, "total": t4 - t0}
        per_item_ms = {k: 1000 * v / max(1, len(messages)) for k, v in result.seconds.items()}
        scored_at = format_time(now or datetime.now(timezone.utc))
        for position, index in enumerate(kept):
            message, item = to_score[index]
            doc = self._document(message, item, scores, index, flags[item.id], related[position], per_item_ms, scored_at)
            result.documents.append(doc)
            result.records.append(Record(self.settings.scored_topic, json.dumps(self._scored_event(doc)).encode(), doc["topic"].encode()))
        return result

    def _dedup(self, valid: list[tuple[Message, NewsItem]], result: BatchResult) -> tuple[list[tuple[Message, NewsItem]], dict[str, dict]]:
        """Drop exact redeliveries, flag text duplicates; replays keep the flags they were stored with."""
        stored = self.store.stored([item.id for _, item in valid]) if valid else {}
        seen: dict[str, str] = {}  # id -> content hash, within this batch
        keys_in_batch: dict[str, str] = {}  # dedup key -> original id, within this batch
        to_score, flags, lookups = [], {}, []
        for message, item in valid:
            digest = content_hash(item)
            if seen.get(item.id) == digest:
                result.duplicates += 1  # the same item twice in one batch: stored once
                continue
            if item.id in seen:  # same id, new content: the later version replaces the earlier
                to_score = [(m, i) for m, i in to_score if i.id != item.id]
            seen[item.id] = digest
            key = dedup_key(item.headline)
            previous = stored.get(item.id)
            if previous is not None and previous.get("content_hash") == digest:
                result.redelivered += 1  # a replay after a crash: same document again
                flags[item.id] = {"duplicate": previous.get("duplicate", False), "duplicate_of": previous.get("duplicate_of"), "dedup_key": key, "content_hash": digest}
                if previous.get("scored_at"):
                    flags[item.id]["scored_at"] = previous["scored_at"]  # the replayed document stays the same
            elif key in keys_in_batch and keys_in_batch[key] != item.id:
                flags[item.id] = {"duplicate": True, "duplicate_of": keys_in_batch[key], "dedup_key": key, "content_hash": digest}
            else:
                flags[item.id] = {"duplicate": False, "duplicate_of": None, "dedup_key": key, "content_hash": digest}
                lookups.append(item)
            keys_in_batch.setdefault(key, item.id)
            to_score.append((message, item))
        originals = self.store.originals([DedupQuery(i.id, flags[i.id]["dedup_key"], i.published_at) for i in lookups], self.settings.dedup_window)
        for item, original in zip(lookups, originals):
            if original is not None and original != item.id:
                flags[item.id].update(duplicate=True, duplicate_of=original)
        result.duplicates += sum(1 for _, i in to_score if flags[i.id]["duplicate"])
        return to_score, flags

    def _score(self, items: list[NewsItem]) -> tuple[Scores | None, dict[int, str]]:
        """Score a batch; if the batch fails, score one by one so one bad item cannot block the rest."""
        if not items:
            return None, {}
        texts = [i.text for i in items]
        try:
            return self.scorer.score_texts(texts), {}
        except ScoringError as exc:
            log.warning("batch of %d failed to score (%s); scoring items one by one", len(items), exc)
        failed: dict[int, str] = {}
        parts = []
        for index, text in enumerate(texts):
            try:
                parts.append((index, self.scorer.score_texts([text])))
            except ScoringError as exc:
                failed[index] = f"scoring failed: {exc}"
        if not parts:
            return None, failed
        return _merge_scores(parts, len(items)), failed

    def _related(self, items: list[NewsItem], vectors: list[np.ndarray]) -> list[list]:
        if self.settings.related_method == "off" or not items:
            return [[] for _ in items]
        queries = [HistoryQuery(i.id, i.text, i.published_at, dedup_key(i.headline), i.tickers, v) for i, v in zip(items, vectors)]
        return self.store.related(queries, self.settings.related_k, self.settings.lookback, self.settings.related_method)

    def _document(self, message: Message, item: NewsItem, scores: Scores, index: int, flags: dict, related: list, per_item_ms: dict, scored_at: str) -> dict:
        sentiment_p = scores.probabilities["sentiment"][index]
        topic_p = scores.probabilities["topic"][index]
        sentiment = scores.labels["sentiment"][int(sentiment_p.argmax())]
        doc = {
            **item.to_json(),
            "scored_at": scored_at,
            **flags,
            "sentiment": sentiment,
            "sentiment_confidence": float(sentiment_p.max()),
            **{f"p_{label}": float(sentiment_p[j]) for j, label in enumerate(scores.labels["sentiment"]) if label in SENTIMENT_LABELS},
            "negative": sentiment == "bearish",
            "is_negative": int(sentiment == "bearish"),  # 0/1: its mean over a window is the negative share (charts)
            "topic": scores.labels["topic"][int(topic_p.argmax())],
            "topic_confidence": float(topic_p.max()),
            "model_version": self.scorer.version,
            "context_mode": self.scorer.settings.mode,
            "context_ids": [n.id for n in scores.neighbours[index]],
            "related_ids": [r.id for r in related],
            "embedding": [round(float(x), 6) for x in scores.embedding[index]],
            "kafka": {"topic": message.topic, "partition": message.partition, "offset": message.offset},
            "timings_ms": per_item_ms,
        }
        return doc

    @staticmethod
    def _scored_event(doc: dict) -> dict:
        """What the detection stage needs: no vector, no body."""
        return {k: doc[k] for k in ("id", "published_at", "headline", "url", "source", "tickers", "topic", "sentiment", "p_bearish", "negative", "duplicate", "duplicate_of", "model_version") if k in doc}


def _merge_scores(parts: list[tuple[int, Scores]], n: int) -> Scores:
    """Single-item results placed at their rows of the batch; rows that failed stay zero (never used)."""
    first = parts[0][1]
    probabilities = {t: np.zeros((n, p.shape[1]), dtype=np.float32) for t, p in first.probabilities.items()}
    embedding = np.zeros((n, first.embedding.shape[1]), dtype=np.float32)
    neighbours: list[list] = [[] for _ in range(n)]
    for row, scores in parts:
        for task in probabilities:
            probabilities[task][row] = scores.probabilities[task][0]
        embedding[row] = scores.embedding[0]
        neighbours[row] = scores.neighbours[0]
    return Scores(probabilities, embedding, neighbours, first.labels)

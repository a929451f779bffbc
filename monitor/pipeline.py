"""The scoring stage's work on one batch: validate → dedup → score (encoder, retrieval memory,
heads) → related history → documents.

Takes messages and returns what to write; it writes nothing itself. The scorer and the history
store are injected, so the same code runs against Kafka + Elasticsearch and in the embedded default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from monitor.errors import InvalidItem, ScoringError
from monitor.labels import SENTIMENT_LABELS
from monitor.records import Dedup, Position, ScoredItem
from monitor.retrieval.history import (
    DedupQuery,
    HistoryQuery,
    HistoryStore,
    Original,
)
from monitor.retrieval.memory import RetrievalMemory
from monitor.schema import NewsItem, format_time, parse_item, parse_stored_time
from monitor.scoring.onnx import OnnxScorer, Scores
from monitor.sinks.base import Record, source_key
from monitor.sources.base import Message
from monitor.text import dedup_key

log = logging.getLogger("bearwatch.pipeline")
STAGES = ("validate", "dedup", "score", "retrieve", "total")


VECTOR_METHODS = ("knn", "both")  # related-history methods that search the stored vectors


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
    """What one batch produced. `documents[i]` came from `messages[i]` and is announced by
    `scored[i]`; `dead` holds the dead letters, at most one per source position."""

    dlq_topic: str = ""
    documents: list[dict] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    scored: list[Record] = field(default_factory=list)  # for the scored topic, parallel to documents
    dead: list[Record] = field(default_factory=list)
    duplicates: int = 0
    redelivered: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    dead_by_stage: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def dead_letters(self) -> int:
        return len(self.dead)

    def dead_letter(self, message: Message, reason: str, stage: str) -> None:
        self.dead.append(dead_letter(message, reason, stage, self.dlq_topic))
        self.dead_by_stage[stage] += 1

    def reject(self, reasons: dict[int, str], stage: str) -> None:
        """Documents refused after they were built (by index in `documents`): each becomes a dead
        letter of its message with the reason, and is neither stored nor announced."""
        if not reasons:
            return
        for i in sorted(reasons):
            self.dead_letter(self.messages[i], reasons[i], stage)
        keep = [i for i in range(len(self.documents)) if i not in reasons]
        self.documents = [self.documents[i] for i in keep]
        self.messages = [self.messages[i] for i in keep]
        self.scored = [self.scored[i] for i in keep]


def dead_letter(message: Message, reason: str, stage: str, dlq_topic: str) -> Record:
    """The original bytes, untouched, with why and where they came from in the headers."""
    headers = (
        ("bearwatch.error", reason.encode("utf-8", "replace")[:1000]),
        ("bearwatch.stage", stage.encode()),
        ("bearwatch.source.topic", message.topic.encode("utf-8", "replace")),
        ("bearwatch.source.partition", str(message.partition).encode()),
        ("bearwatch.source.offset", str(message.offset).encode()),
    )
    return Record(dlq_topic, message.value if message.value is not None else b"", message.key, headers)


def unexpected(exc: BaseException) -> str:
    """The reason recorded when code that should not fail on any input did (a bug worth a report)."""
    return f"unexpected {type(exc).__name__}: {str(exc)[:300]}"


def content_hash(item: NewsItem) -> str:
    return hashlib.blake2b(json.dumps(item.to_json(), sort_keys=True).encode(), digest_size=16).hexdigest()


class ScoringPipeline:
    """Every failure that belongs to one item (validation, keys, scoring, building its document and
    record) dead-letters that item with the reason and the stage; the rest of the batch goes on.
    Only the stores' outages (StoreUnavailable) escape, and the whole batch is retried."""

    def __init__(
        self,
        scorer: OnnxScorer,
        store: HistoryStore,
        settings: PipelineSettings,
        memory: RetrievalMemory | None = None,
    ) -> None:
        self.scorer = scorer
        self.store = store
        self.settings = settings
        self.memory = memory  # analysts' labels, searched before scoring (models with memory fusion)

    def process(
        self,
        messages: Sequence[Message],
        now: datetime | None = None,
        partitions: dict[str, int] | None = None,
        upcoming: Sequence[Message] = (),
    ) -> BatchResult:
        """`partitions`: how many partitions each source topic has (scored records carry it, so the
        detection stage knows which sources its event-time watermark waits for). `upcoming`: the
        next batch, already polled; once this one is scored the encoder starts on it in the
        background (`OnnxScorer.prefetch`), while this batch's history, documents and writes go on."""
        result = BatchResult(dlq_topic=self.settings.dlq_topic)
        t0 = time.perf_counter()
        valid: list[tuple[Message, NewsItem]] = []
        for message in messages:
            try:
                valid.append((message, parse_item(message.value, now)))
            except InvalidItem as exc:
                result.dead_letter(message, str(exc), "validate")
            except Exception as exc:  # noqa: BLE001 — one message's bug must not stop the daemon
                log.exception(
                    "validation failed unexpectedly at %s/%d/%d", message.topic, message.partition, message.offset
                )
                result.dead_letter(message, unexpected(exc), "validate")
        t1 = time.perf_counter()
        to_score, flags = self._dedup(valid, result)
        t2 = time.perf_counter()
        scores, failed = self._score([item for _, item in to_score])
        for index, reason in failed.items():
            result.dead_letter(to_score[index][0], reason, "score")
        kept = [i for i in range(len(to_score)) if i not in failed]
        if upcoming:
            self.scorer.prefetch(self._texts(upcoming, now))
        t3 = time.perf_counter()
        related = self._related([to_score[i][1] for i in kept], [scores.embedding[i] for i in kept] if scores else [])
        t4 = time.perf_counter()
        result.seconds = {
            "validate": t1 - t0,
            "dedup": t2 - t1,
            "score": t3 - t2,
            "retrieve": t4 - t3,
            "total": t4 - t0,
        }
        per_item_ms = {k: 1000 * v / max(1, len(messages)) for k, v in result.seconds.items()}
        scored_at = format_time(now or datetime.now(timezone.utc))
        counts = partitions or {}
        for position, index in enumerate(kept):
            assert scores is not None  # kept is empty when nothing was scored
            message, item = to_score[index]
            try:
                scored = self._document(
                    message, item, scores, index, flags[index], related[position], per_item_ms, scored_at
                )
                doc = scored.to_json()
                event = scored.event(counts.get(message.topic, 1)).to_json()
                record = Record(
                    self.settings.scored_topic, json.dumps(event).encode(), source_key(message.topic, message.partition)
                )
            except Exception as exc:  # noqa: BLE001
                log.exception(
                    "building the document of %s/%d/%d failed", message.topic, message.partition, message.offset
                )
                result.dead_letter(message, unexpected(exc), "document")
                continue
            result.documents.append(doc)
            result.messages.append(message)
            result.scored.append(record)
        return result

    @staticmethod
    def _texts(messages: Sequence[Message], now: datetime | None) -> list[str]:
        """What the encoder will be asked for these messages (the ones that fail validation are
        left out here, and dead-lettered when their batch is processed)."""
        texts = []
        for message in messages:
            try:
                texts.append(parse_item(message.value, now).text)
            except Exception:  # noqa: BLE001 — decided, with its reason, when its batch is processed
                continue
        return texts

    def _dedup(
        self, valid: list[tuple[Message, NewsItem]], result: BatchResult
    ) -> tuple[list[tuple[Message, NewsItem]], dict[int, dict]]:
        """Flag text duplicates exactly as if the items were processed one at a time, in order.

        An item is a duplicate when an item before it (stored, or earlier in this batch) has the
        same dedup key within the window; it points at the first of that group (the earliest by
        published_at, then id). A redelivered item keeps the flags it was stored with; the same id
        with new content is a new version, which replaces the old one from then on. So the flags
        do not depend on where batches begin, and a batch replayed after a crash decides the same.
        Returns the versions to score, and their flags by position in that list.
        """
        stored = self.store.stored([item.id for _, item in valid]) if valid else {}
        to_score, hashes, keys = self._versions(valid, result)
        flags, lookups = self._replays_and_queries(to_score, hashes, keys, stored, result)
        window = self.settings.dedup_window
        found = dict(zip((pos for pos, _ in lookups), self.store.originals([q for _, q in lookups], window)))
        self._decide(to_score, hashes, keys, flags, found)
        result.duplicates += sum(1 for f in flags.values() if f["duplicate"])
        return to_score, flags

    def _versions(
        self, valid: list[tuple[Message, NewsItem]], result: BatchResult
    ) -> tuple[list[tuple[Message, NewsItem]], list[str], list[str]]:
        """The batch's versions to score, with each one's content hash and dedup key: the same item
        again within the batch is stored once; an item whose keys cannot be computed is dead-lettered."""
        to_score: list[tuple[Message, NewsItem]] = []
        hashes: list[str] = []
        keys: list[str] = []
        latest: dict[str, int] = {}  # id -> position of its latest version so far in to_score
        for message, item in valid:
            try:
                digest, key = content_hash(item), dedup_key(item.headline)
            except Exception as exc:  # noqa: BLE001 — one item's text must not stop the batch
                log.exception("dedup keys of %s/%d/%d failed", message.topic, message.partition, message.offset)
                result.dead_letter(message, unexpected(exc), "dedup")
                continue
            if item.id in latest and hashes[latest[item.id]] == digest:
                result.duplicates += 1  # the same item again within the batch: stored once
                continue
            latest[item.id] = len(to_score)
            to_score.append((message, item))
            hashes.append(digest)
            keys.append(key)
        return to_score, hashes, keys

    @staticmethod
    def _replays_and_queries(
        to_score: list[tuple[Message, NewsItem]],
        hashes: list[str],
        keys: list[str],
        stored: dict[str, dict],
        result: BatchResult,
    ) -> tuple[dict[int, dict], list[tuple[int, DedupQuery]]]:
        """Flags for the versions stored before with the same content (a replay keeps its flags),
        and a store query for each other version: the first of its key within the window, leaving
        out this batch's own earlier versions and copies an interrupted attempt at it stored."""
        # A stored copy of one of this batch's messages (same source position) was written by an
        # interrupted attempt at this batch: it stands for nothing before that message, so searches
        # skip it, and the batch's own versions take its place in order. So does every id with an
        # earlier version here. (A copy stored from an earlier message is history like any other.)
        positions = {(m.topic, m.partition, m.offset) for m, _ in to_score}
        replayed = {i for i, doc in stored.items() if _position(doc) in positions}
        by_key: dict[str, set[str]] = defaultdict(set)  # key -> batch ids with a version of that key
        for (_, item), key in zip(to_score, keys):
            by_key[key].add(item.id)
        flags: dict[int, dict] = {}
        lookups: list[tuple[int, DedupQuery]] = []
        first_seen: dict[str, int] = {}
        for pos, ((_, item), digest, key) in enumerate(zip(to_score, hashes, keys)):
            previous = stored.get(item.id) if item.id not in first_seen else None
            first_seen.setdefault(item.id, pos)
            if previous is not None and previous.get("content_hash") == digest:
                result.redelivered += 1  # a replay after a crash: same document again, same flags
                flags[pos] = {
                    "duplicate": previous.get("duplicate", False),
                    "duplicate_of": previous.get("duplicate_of"),
                }
                if previous.get("scored_at"):
                    flags[pos]["scored_at"] = previous["scored_at"]
                if previous.get("kafka"):
                    flags[pos]["first_position"] = Position.from_json(previous["kafka"])
                continue
            skip = tuple(
                sorted(i for i in by_key[key] if i != item.id and (i in replayed or first_seen.get(i, pos) < pos))
            )
            lookups.append((pos, DedupQuery(item.id, key, item.published_at, exclude=skip)))
        return flags, lookups

    def _decide(
        self,
        to_score: list[tuple[Message, NewsItem]],
        hashes: list[str],
        keys: list[str],
        flags: dict[int, dict],
        found: dict[int, Original | None],
    ) -> None:
        """Complete `flags` in batch order: a version is a duplicate of the first of its key within
        the window, among what the store holds (`found`) and the batch's versions before it."""
        window = self.settings.dedup_window
        current: dict[str, tuple[str, Original]] = {}  # id -> (key, version) as of the item being decided
        for pos, ((_, item), key) in enumerate(zip(to_score, keys)):
            if pos not in flags:
                here = [
                    o
                    for k, o in current.values()
                    if k == key and o.id != item.id and abs(o.published_at - item.published_at) <= window
                ]
                stored_first = found[pos]
                first = min(here + ([stored_first] if stored_first else []), default=None)
                flags[pos] = {"duplicate": first is not None, "duplicate_of": first.root if first else None}
            flags[pos].update(dedup_key=key, content_hash=hashes[pos])
            # As stored (millisecond precision), so it ranks as it will once stored.
            current[item.id] = (
                key,
                Original(parse_stored_time(format_time(item.published_at)), item.id, flags[pos]["duplicate_of"]),
            )

    def _score(self, items: list[NewsItem]) -> tuple[Scores | None, dict[int, str]]:
        """Score a batch: the encoder, then the retrieval memory's neighbours, then the heads. If the
        batch fails in the model, items go one by one so one bad item cannot block the rest; a
        memory outage (StoreUnavailable) fails the batch, which is retried."""
        if not items:
            return None, {}
        memory_k = self.scorer.memory_k if self.memory is not None else 0
        if memory_k:
            self.memory.sync(self.scorer)  # type: ignore[union-attr]  # labels added since the last batch
        texts = [i.text for i in items]
        failed: dict[int, str] = {}
        try:
            raw, ok = self.scorer.encode(texts), list(range(len(items)))
        except Exception as exc:  # noqa: BLE001 — whatever one text does to the tokenizer or the model
            log.warning(
                "batch of %d failed to score (%s: %s); scoring items one by one", len(items), type(exc).__name__, exc
            )
            raw, ok = self._each(texts, failed)
        if not ok:
            return None, failed
        memory = None
        if memory_k:
            scored = [items[i] for i in ok]
            memory = self.scorer.search_memory(
                self.memory,
                [i.text for i in scored],
                raw["item_embedding"],
                [i.id for i in scored],
                [i.published_at for i in scored],
            )
        try:
            scores = self.scorer.finish([texts[i] for i in ok], raw, None, memory)
        except Exception as exc:  # noqa: BLE001 — the heads on one item's numbers: find which
            log.warning("the heads failed on a batch of %d (%s: %s); one by one", len(ok), type(exc).__name__, exc)
            return self._finish_each(texts, raw, ok, memory, failed), failed
        return (scores if len(ok) == len(items) else _expand(scores, ok, len(items))), failed

    def _each(self, texts: list[str], failed: dict[int, str]) -> tuple[dict[str, np.ndarray], list[int]]:
        """The encoder on each text alone; the ones it fails on go to `failed` with the reason."""
        rows: list[tuple[int, dict[str, np.ndarray]]] = []
        for index, text in enumerate(texts):
            try:
                rows.append((index, self.scorer.encode([text])))
            except ScoringError as exc:
                failed[index] = f"scoring failed: {exc}"
            except Exception as exc:  # noqa: BLE001
                log.exception("scoring one item failed unexpectedly")
                failed[index] = f"scoring failed: {unexpected(exc)}"
        if not rows:
            return {}, []
        return {name: np.concatenate([r[name] for _, r in rows]) for name in rows[0][1]}, [i for i, _ in rows]

    def _finish_each(self, texts, raw, ok, memory, failed: dict[int, str]) -> Scores | None:
        parts, kept = [], []
        for row, index in enumerate(ok):
            try:
                one = {name: value[row : row + 1] for name, value in raw.items()}
                parts.append(self.scorer.finish([texts[index]], one, None, memory[row : row + 1] if memory else None))
                kept.append(index)
            except Exception as exc:  # noqa: BLE001
                log.exception("the heads failed on one item")
                failed[index] = f"scoring failed: {unexpected(exc)}"
        if not parts:
            return None
        merged = Scores(
            {t: np.concatenate([p.probabilities[t] for p in parts]) for t in parts[0].probabilities},
            np.concatenate([p.embedding for p in parts]),
            [n for p in parts for n in p.neighbours],
            parts[0].labels,
        )
        return _expand(merged, kept, len(texts))

    def _related(self, items: list[NewsItem], vectors: list[np.ndarray]) -> list[list]:
        if self.settings.related_method == "off" or not items:
            return [[] for _ in items]
        queries = [
            HistoryQuery(i.id, i.text, i.published_at, dedup_key(i.headline), i.tickers, v)
            for i, v in zip(items, vectors)
        ]
        return self.store.related(
            queries, self.settings.related_k, self.settings.lookback, self.settings.related_method
        )

    def _document(
        self,
        message: Message,
        item: NewsItem,
        scores: Scores,
        index: int,
        flags: dict,
        related: list,
        per_item_ms: dict,
        scored_at: str,
    ) -> ScoredItem:
        sentiment_p = scores.probabilities["sentiment"][index]
        topic_p = scores.probabilities["topic"][index]
        labels = scores.labels
        return ScoredItem(
            item=item,
            scored_at=scored_at,
            dedup=Dedup(
                flags["duplicate"],
                flags["duplicate_of"],
                flags["dedup_key"],
                flags["content_hash"],
                flags.get("scored_at"),
                flags.get("first_position"),
            ),
            sentiment=labels["sentiment"][int(sentiment_p.argmax())],
            sentiment_confidence=float(sentiment_p.max()),
            probabilities={
                label: float(sentiment_p[j]) for j, label in enumerate(labels["sentiment"]) if label in SENTIMENT_LABELS
            },
            topic=labels["topic"][int(topic_p.argmax())],
            topic_confidence=float(topic_p.max()),
            model_version=self.scorer.version,
            context_mode=self.scorer.settings.mode,
            context_ids=tuple(n.id for n in scores.neighbours[index]),
            related_ids=tuple(r.id for r in related),
            # the vector is stored only where related history searches it (knn, both): 384 numbers
            # a document, the bulk of its bytes, and of Elasticsearch's indexing work
            embedding=tuple(np.round(scores.embedding[index].astype(np.float64), 6).tolist())
            if self.settings.related_method in VECTOR_METHODS
            else (),
            position=Position(message.topic, message.partition, message.offset),
            timings_ms=per_item_ms,
        )


def _position(doc: dict) -> tuple | None:
    """Where a stored document's message was in the news topic (documents carry it)."""
    k = doc.get("kafka") or {}
    return (k.get("topic"), k.get("partition"), k.get("offset")) if k else None


def _expand(scores: Scores, rows: list[int], n: int) -> Scores:
    """Scores of some items placed at their rows of the batch; the other rows stay zero (never used)."""
    probabilities = {}
    for task, p in scores.probabilities.items():
        probabilities[task] = np.zeros((n, p.shape[1]), dtype=np.float32)
        probabilities[task][rows] = p
    embedding = np.zeros((n, scores.embedding.shape[1]), dtype=np.float32)
    embedding[rows] = scores.embedding
    neighbours: list[list] = [[] for _ in range(n)]
    for position, row in enumerate(rows):
        neighbours[row] = scores.neighbours[position]
    return Scores(probabilities, embedding, neighbours, scores.labels)

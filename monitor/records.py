"""The records that cross a boundary between bearwatch's stages, each with one JSON form.

* :class:`ScoredItem` — a scored news item: the document of the news index (and of the embedded
  default's ``*.scored.jsonl``). The news index mapping (``monitor/indices.py``) is checked against
  :data:`SCORED_ITEM_FIELDS` by the tests.
* :class:`ScoredEvent` — what the detection stage reads from the scored topic: a scored item
  without its vector and body, with where it came from (the source partition and how many
  partitions that topic has, for the event-time watermark).
* :class:`AlertEvent` — what the detector decides for one key and bucket (opened, updated, ended);
  the outbox turns it into an alert document (``monitor/alerting/outbox.py``).

Field names are written here once; everything else names fields through these classes
(:meth:`ScoredItem.fields` fails at import time on a name that is not a field).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from monitor.schema import NewsItem, format_time, parse_stored_time


@dataclass(frozen=True)
class Position:
    """Where a message was in the news topic."""

    topic: str
    partition: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Position:
        return cls(str(doc["topic"]), int(doc["partition"]), int(doc.get("offset", -1)))

    @property
    def source(self) -> str:
        """The source partition's key, ``topic/partition`` (the tracker's watermarks are per source)."""
        return f"{self.topic}/{self.partition}"


@dataclass(frozen=True)
class Dedup:
    """The scoring stage's near-duplicate decision for one item (in arrival order; the detector
    decides again by event time, see ``monitor/detection/tracker.py``)."""

    duplicate: bool
    duplicate_of: str | None
    dedup_key: str
    content_hash: str
    # A redelivered item keeps the time it was first scored and the position it was first read at:
    # its stored copy then still stands for that earlier message, and a replay of the batch that
    # holds the redelivery does not mistake it for one of its own interrupted writes.
    scored_at: str | None = None
    first_position: Position | None = None


@dataclass(frozen=True)
class ScoredItem:
    item: NewsItem
    scored_at: str  # RFC 3339, milliseconds
    dedup: Dedup
    sentiment: str
    sentiment_confidence: float
    probabilities: dict[str, float]  # p_<label> of each sentiment label, in the model's order
    topic: str
    topic_confidence: float
    model_version: str
    context_mode: str
    context_ids: tuple[str, ...]
    related_ids: tuple[str, ...]
    embedding: tuple[float, ...]  # empty when related history does not search vectors (not stored)
    position: Position  # of the message this item was read from now
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def negative(self) -> bool:
        return self.sentiment == "bearish"

    @property
    def p_bearish(self) -> float:
        return self.probabilities.get("bearish", 0.0)

    def to_json(self) -> dict[str, Any]:
        d = self.dedup
        return {
            **self.item.to_json(),
            "scored_at": d.scored_at or self.scored_at,
            "duplicate": d.duplicate,
            "duplicate_of": d.duplicate_of,
            "dedup_key": d.dedup_key,
            "content_hash": d.content_hash,
            "sentiment": self.sentiment,
            "sentiment_confidence": self.sentiment_confidence,
            **{f"p_{label}": p for label, p in self.probabilities.items()},
            "negative": self.negative,
            "is_negative": int(self.negative),  # 0/1: its mean over a window is the negative share (charts)
            "topic": self.topic,
            "topic_confidence": self.topic_confidence,
            "model_version": self.model_version,
            "context_mode": self.context_mode,
            "context_ids": list(self.context_ids),
            "related_ids": list(self.related_ids),
            "kafka": (d.first_position or self.position).to_json(),
            "timings_ms": self.timings_ms,
        } | ({"embedding": list(self.embedding)} if self.embedding else {})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScoredItem:
        item = NewsItem(
            id=doc["id"],
            published_at=parse_stored_time(doc["published_at"]),
            headline=doc["headline"],
            body=doc.get("body"),
            source=doc.get("source"),
            tickers=tuple(doc.get("tickers") or ()),
            url=doc.get("url"),
            lang=doc.get("lang"),
            repaired=tuple(doc.get("repaired") or ()),
        )
        return cls(
            item=item,
            scored_at=doc["scored_at"],
            dedup=Dedup(bool(doc["duplicate"]), doc.get("duplicate_of"), doc["dedup_key"], doc["content_hash"]),
            sentiment=doc["sentiment"],
            sentiment_confidence=float(doc["sentiment_confidence"]),
            probabilities={k[2:]: float(v) for k, v in doc.items() if k.startswith("p_")},
            topic=doc["topic"],
            topic_confidence=float(doc["topic_confidence"]),
            model_version=doc["model_version"],
            context_mode=doc["context_mode"],
            context_ids=tuple(doc.get("context_ids") or ()),
            related_ids=tuple(doc.get("related_ids") or ()),
            embedding=tuple(doc.get("embedding") or ()),
            position=Position.from_json(doc["kafka"]),
            timings_ms=dict(doc.get("timings_ms") or {}),
        )

    def event(self, partitions: int) -> ScoredEvent:
        """The scored topic's record of this item."""
        i = self.item
        return ScoredEvent(
            id=i.id,
            published_at=i.published_at,
            negative=self.negative,
            p_bearish=self.p_bearish,
            topic=self.topic,
            tickers=i.tickers,
            duplicate=self.dedup.duplicate,
            source=self.position.source,
            partitions=partitions,
            dedup_key=self.dedup.dedup_key,
            headline=i.headline,
            url=i.url,
            outlet=i.source,
            sentiment=self.sentiment,
            duplicate_of=self.dedup.duplicate_of,
            model_version=self.model_version,
            position=self.position,
        )

    @staticmethod
    def fields(*names: str) -> list[str]:
        """`names`, each checked to be a field of the stored document (for source filtering)."""
        unknown = [n for n in names if n not in SCORED_ITEM_FIELDS]
        if unknown:
            raise KeyError(f"not fields of a scored item: {unknown}")
        return list(names)


# Every field a stored scored item can have (p_* for the three sentiment labels).
SCORED_ITEM_FIELDS = (
    "id",
    "published_at",
    "headline",
    "body",
    "source",
    "url",
    "lang",
    "tickers",
    "repaired",
    "scored_at",
    "duplicate",
    "duplicate_of",
    "dedup_key",
    "content_hash",
    "sentiment",
    "sentiment_confidence",
    "p_bearish",
    "p_neutral",
    "p_bullish",
    "negative",
    "is_negative",
    "topic",
    "topic_confidence",
    "model_version",
    "context_mode",
    "context_ids",
    "related_ids",
    "embedding",
    "kafka",
    "timings_ms",
)


@dataclass(frozen=True)
class ScoredEvent:
    """A record of the scored topic. `source` is the source partition (``topic/partition``, one
    source when unknown), not the news outlet (that is `outlet`, the item's ``source`` field)."""

    id: str
    published_at: datetime
    negative: bool
    p_bearish: float
    topic: str | None = None
    tickers: tuple[str, ...] = ()
    duplicate: bool = False
    source: str = ""
    partitions: int = 1  # how many partitions the source topic has
    dedup_key: str | None = None  # near-duplicate key: detection decides duplicates by event time
    # Carried for readers of the scored topic (the detector itself does not use them).
    headline: str = ""
    url: str | None = None
    outlet: str | None = None
    sentiment: str | None = None
    duplicate_of: str | None = None
    model_version: str | None = None
    position: Position | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "published_at": format_time(self.published_at), "headline": self.headline}
        for name, value in (("url", self.url), ("source", self.outlet)):
            if value is not None:
                out[name] = value
        if self.tickers:
            out["tickers"] = list(self.tickers)
        out.update(
            topic=self.topic,
            sentiment=self.sentiment,
            p_bearish=self.p_bearish,
            negative=self.negative,
            duplicate=self.duplicate,
            duplicate_of=self.duplicate_of,
            dedup_key=self.dedup_key,
            model_version=self.model_version,
        )
        if self.position is not None:
            out["kafka"] = {**self.position.to_json(), "partitions": self.partitions}
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ScoredEvent:
        """Tolerant of older records: only id and published_at are required."""
        k = doc.get("kafka")
        position = Position.from_json(k) if k else None
        return cls(
            id=str(doc["id"]),
            published_at=parse_stored_time(doc["published_at"]),
            negative=bool(doc.get("negative")),
            p_bearish=float(doc.get("p_bearish", 0.0)),
            topic=doc.get("topic"),
            tickers=tuple(doc.get("tickers") or ()),
            duplicate=bool(doc.get("duplicate")),
            source=position.source if position else "",
            partitions=int((k or {}).get("partitions") or 1),
            dedup_key=doc.get("dedup_key"),
            headline=doc.get("headline", ""),
            url=doc.get("url"),
            outlet=doc.get("source"),
            sentiment=doc.get("sentiment"),
            duplicate_of=doc.get("duplicate_of"),
            model_version=doc.get("model_version"),
            position=position,
        )

    def state(self) -> list:
        """The detector snapshot's compact form (only what the detector uses)."""
        return [
            self.id,
            self.published_at.isoformat(),
            self.negative,
            self.p_bearish,
            self.topic,
            list(self.tickers),
            self.dedup_key,
        ]

    @classmethod
    def from_state(cls, s: list) -> ScoredEvent:
        return cls(s[0], datetime.fromisoformat(s[1]), s[2], s[3], s[4], tuple(s[5]), dedup_key=s[6])


@dataclass(frozen=True)
class AlertEvent:
    """One decision of the detector about one key's episode."""

    id: str  # key + the bucket the episode opened in: a replay gives the same id
    key: str  # all | topic:<name> | ticker:<symbol>
    kind: str
    status: str  # opened | updated | ended
    severity: str  # warning | high | critical
    window_start: datetime
    window_end: datetime
    observed: float
    baseline: float
    score: float
    item_ids: tuple[str, ...]
    kinds: tuple[str, ...] = ()  # every test that flagged this bucket
    shared: int = 0  # of the window's negatives, those filed under many tickers (each counted for a share)
    # What an analyst asks first: the test's tail probability, and the window it looked at (its
    # length, its items and how many of them were negative).
    p_value: float = 1.0
    window_minutes: float = 0.0
    items: float = 0.0
    negatives: float = 0.0


@dataclass(frozen=True)
class Watermark:
    """A control record of the scored topic: a scoring instance read `position.partition` of the
    news topic up to `position.offset` (its end for now), so the detector's event-time watermark
    need not wait for that partition (see ``monitor/detection/tracker.py``)."""

    position: Position
    partitions: int

    def to_json(self) -> dict[str, Any]:
        return {"watermark": {**self.position.to_json(), "partitions": self.partitions, "caught_up": True}}

    @staticmethod
    def is_watermark(doc: dict[str, Any]) -> bool:
        return "watermark" in doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Watermark:
        w = doc["watermark"]
        return cls(Position.from_json(w), int(w.get("partitions") or 1))


@dataclass(frozen=True)
class Alert:
    """An alert episode as the outbox holds it (the alerts index document): what the detector
    decided, and where its Slack message stands. Opened once (a replayed opening changes nothing);
    updated while its buckets keep flagging: an update to a higher severity (an escalation) takes its
    figures, and the end of the episode, both mark the message for a follow-up (a thread reply and an
    edit of the message to its current state)."""

    id: str
    key: str  # all | topic:<name> | ticker:<symbol>
    kind: str
    severity: str  # the highest the episode reached
    status: str  # the episode: opened | updated | ended
    window_start: datetime
    window_end: datetime
    created_at: datetime
    updated_at: datetime
    observed: float
    baseline: float
    score: float
    headline_ids: tuple[str, ...]
    shared_items: int = 0  # negatives in the window filed under many tickers (each counted for a share)
    p_value: float = 1.0  # of the test behind the figures (the opening's, or the last escalation's)
    window_minutes: float = 0.0  # that test's window
    items: float = 0.0  # items in that window, and how many were negative
    negatives: float = 0.0
    tests: tuple[str, ...] = ()  # every test that flagged it
    delivery: str = "pending"  # the Slack message: pending | sent | failed (refused for good)
    attempts: int = 0  # posts begun (counted before each post: a crash after it is detectable)
    next_attempt_at: datetime | None = None  # after a failed post: not before (back-off, Retry-After)
    notified: str | None = None  # the episode status the Slack message last showed
    notified_severity: str | None = None  # and the severity
    followup: bool = False  # escalated or ended since the message was posted: a thread reply is due
    slack_ts: str | None = None
    last_error: str | None = None
    feedback: str | None = None  # an analyst's verdict from Slack: false_alarm
    feedback_by: str | None = None
    feedback_at: datetime | None = None

    @property
    def key_kind(self) -> str:
        return self.key.split(":", 1)[0]

    @classmethod
    def opened(cls, event: AlertEvent, now: datetime) -> Alert:
        return cls(
            id=event.id, key=event.key, kind=event.kind, severity=event.severity, status=event.status,
            window_start=event.window_start, window_end=event.window_end, created_at=now, updated_at=now,
            observed=event.observed, baseline=event.baseline, score=event.score, headline_ids=event.item_ids,
            shared_items=event.shared, p_value=event.p_value, window_minutes=event.window_minutes,
            items=event.items, negatives=event.negatives, tests=event.kinds,
        )  # fmt: skip

    def recorded(self, event: AlertEvent, now: datetime) -> Alert:
        """This episode after a later event of it: the window and status move on; an escalation (a
        higher severity) takes the event's figures; an escalation or the end calls for a follow-up."""
        if self.status == "ended":
            return self  # a replay of an episode that is over: nothing new to say
        moved: dict[str, Any] = {"status": event.status, "window_end": event.window_end, "updated_at": now}
        if event.status == "ended":
            return replace(self, **moved, followup=True)
        if SEVERITY_RANK.get(event.severity, 0) > SEVERITY_RANK.get(self.severity, 0):
            return replace(self, **moved, **escalation(event), followup=True)
        return replace(self, **moved)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "key": self.key, "key_kind": self.key_kind, "kind": self.kind, "severity": self.severity,
            "status": self.status, "delivery": self.delivery, "window_start": format_time(self.window_start),
            "window_end": format_time(self.window_end), "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at), "observed": self.observed, "baseline": self.baseline,
            "score": self.score, "headline_ids": list(self.headline_ids), "shared_items": self.shared_items,
            "p_value": self.p_value, "window_minutes": self.window_minutes, "items": self.items,
            "negatives": self.negatives, "tests": list(self.tests), "attempts": self.attempts,
            "followup": self.followup,
        }  # fmt: skip
        for name in ("notified", "notified_severity", "slack_ts", "last_error", "feedback", "feedback_by"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("next_attempt_at", "feedback_at"):
            if getattr(self, name) is not None:
                out[name] = format_time(getattr(self, name))
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Alert:
        retry, judged = doc.get("next_attempt_at"), doc.get("feedback_at")
        return cls(
            id=doc["id"], key=doc["key"], kind=doc["kind"], severity=doc["severity"], status=doc["status"],
            window_start=parse_stored_time(doc["window_start"]), window_end=parse_stored_time(doc["window_end"]),
            created_at=parse_stored_time(doc["created_at"]), updated_at=parse_stored_time(doc["updated_at"]),
            observed=float(doc["observed"]), baseline=float(doc["baseline"]), score=float(doc["score"]),
            headline_ids=tuple(doc.get("headline_ids") or ()), shared_items=int(doc.get("shared_items") or 0),
            p_value=float(doc.get("p_value", 1.0)), window_minutes=float(doc.get("window_minutes") or 0.0),
            items=float(doc.get("items") or 0.0), negatives=float(doc.get("negatives") or 0.0),
            tests=tuple(doc.get("tests") or ()), delivery=doc.get("delivery", "pending"),
            attempts=int(doc.get("attempts", 0)), next_attempt_at=parse_stored_time(retry) if retry else None,
            notified=doc.get("notified"), notified_severity=doc.get("notified_severity"),
            followup=bool(doc.get("followup", False)), slack_ts=doc.get("slack_ts"), last_error=doc.get("last_error"),
            feedback=doc.get("feedback"), feedback_by=doc.get("feedback_by"),
            feedback_at=parse_stored_time(judged) if judged else None,
        )  # fmt: skip


SEVERITY_RANK = {"warning": 0, "high": 1, "critical": 2}


def escalation(event: AlertEvent) -> dict[str, Any]:
    """The fields of an alert document that an escalating event replaces (both outboxes use it)."""
    return {
        "severity": event.severity, "kind": event.kind, "observed": event.observed, "baseline": event.baseline,
        "score": event.score, "headline_ids": event.item_ids, "shared_items": event.shared, "p_value": event.p_value,
        "window_minutes": event.window_minutes, "items": event.items, "negatives": event.negatives,
        "tests": event.kinds,
    }  # fmt: skip


# Every field an alert document can have (the alerts index mapping is checked against it).
ALERT_FIELDS = (
    "id", "key", "key_kind", "kind", "severity", "status", "delivery", "notified", "notified_severity", "followup",
    "window_start", "window_end", "created_at", "updated_at", "observed", "baseline", "score", "headline_ids",
    "shared_items", "p_value", "window_minutes", "items", "negatives", "tests", "slack_ts", "attempts",
    "next_attempt_at", "last_error", "feedback", "feedback_by", "feedback_at",
)  # fmt: skip

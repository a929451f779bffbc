"""The news item contract and its validation: raw bytes in, a NewsItem or a reason out.

A news item is UTF-8 JSON with ``id`` (string), ``published_at`` (RFC 3339) and a non-empty
``headline``; ``body``, ``source``, ``tickers`` (list of strings), ``url`` and ``lang`` are optional.
Unknown fields are kept (``extra``) but ignored. Everything else is rejected with a reason that
says what was wrong, so the dead-letter topic explains itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from monitor.errors import InvalidItem
from monitor.text import normalise_edge

# Bounds that no real news item reaches; past them a message is hostile or broken.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_ID_CHARS = 256
MAX_ID_BYTES = 512  # Elasticsearch refuses a longer _id (UTF-8 bytes): the whole bulk request fails
MAX_HEADLINE_CHARS = 2_000
MAX_BODY_CHARS = 100_000
MAX_SHORT_FIELD_CHARS = 2_048  # source, url, lang
MAX_TICKERS = 64
MAX_TICKER_CHARS = 32
MAX_JSON_DEPTH = 32
# Far outside any plausible publication time: almost surely a unit or parsing error upstream.
EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)
LATEST_AHEAD_DAYS = 2

_UNPRINTABLE_ID = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
KNOWN_FIELDS = ("id", "published_at", "headline", "body", "source", "tickers", "url", "lang")


@dataclass(frozen=True)
class NewsItem:
    id: str
    published_at: datetime  # always timezone-aware, UTC
    headline: str
    body: str | None = None
    source: str | None = None
    tickers: tuple[str, ...] = ()
    url: str | None = None
    lang: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    repaired: tuple[str, ...] = ()  # fields whose text was normalised at the edge (see normalise_edge)

    @property
    def text(self) -> str:
        """What the model reads: the headline (bodies are stored, not scored: headlines carry the news)."""
        return self.headline

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "published_at": format_time(self.published_at), "headline": self.headline}
        for name in ("body", "source", "url", "lang"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.tickers:
            out["tickers"] = list(self.tickers)
        if self.repaired:
            out["repaired"] = list(self.repaired)
        return out


def format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_stored_time(value: str) -> datetime:
    """A time as bearwatch writes it (RFC 3339, as format_time writes it, or with an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_time(value: Any, now: datetime | None = None) -> datetime:
    if not isinstance(value, str):
        raise InvalidItem(f"published_at must be an RFC 3339 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidItem(f"published_at {value[:64]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise InvalidItem(f"published_at {value[:64]!r} has no time zone offset (RFC 3339 requires one)")
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise InvalidItem(f"published_at {value[:64]!r} is out of range") from None
    now = now or datetime.now(timezone.utc)
    if parsed < EARLIEST or (parsed - now).days >= LATEST_AHEAD_DAYS:
        raise InvalidItem(
            f"published_at {value[:64]!r} is implausible (before {EARLIEST.year} or more than {LATEST_AHEAD_DAYS} "
            "days ahead)"
        )
    return parsed


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, stopping as soon as it passes `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _optional_str(obj: dict, name: str, limit: int, repaired: list[str]) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidItem(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidItem(f"{name} has {len(value)} characters (limit {limit})")
    return _edge(value, name, repaired)


def _edge(value: str, name: str, repaired: list[str]) -> str:
    text, changed = normalise_edge(value)
    if changed and name not in repaired:
        repaired.append(name)
    return text


def _tickers(value: Any, repaired: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidItem("tickers must be a list of strings")
    if len(value) > MAX_TICKERS:
        raise InvalidItem(f"tickers has {len(value)} entries (limit {MAX_TICKERS})")
    cleaned = []
    for ticker in value:
        t = _edge(ticker, "tickers", repaired).strip().lstrip("$").upper()
        if not t or len(t) > MAX_TICKER_CHARS or any(c.isspace() for c in t):
            raise InvalidItem(f"ticker {ticker[:40]!r} is not a symbol")
        if t not in cleaned:
            cleaned.append(t)
    return tuple(cleaned)


def parse_item(raw: bytes | None, now: datetime | None = None) -> NewsItem:
    """Validate one Kafka message value. Raises InvalidItem with the reason."""
    if raw is None:
        raise InvalidItem("message has no value (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidItem(f"message is {len(raw)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidItem(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidItem(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InvalidItem(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidItem(f"a news item is a JSON object, got {type(obj).__name__}")
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidItem(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return item_from_dict(obj, now)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def item_from_dict(obj: dict, now: datetime | None = None) -> NewsItem:
    item_id = obj.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise InvalidItem("id is required and must be a non-empty string")
    # An id is an identity: never repaired. Control characters and lone surrogates are refused.
    if len(item_id) > MAX_ID_CHARS or _UNPRINTABLE_ID.search(item_id):
        raise InvalidItem(f"id must be at most {MAX_ID_CHARS} printable characters (no controls, no lone surrogates)")
    id_bytes = len(item_id.encode("utf-8"))  # no lone surrogates here: encodes
    if id_bytes > MAX_ID_BYTES:
        raise InvalidItem(f"id is {id_bytes} bytes in UTF-8 (limit {MAX_ID_BYTES})")
    if "published_at" not in obj:
        raise InvalidItem("published_at is required")
    published_at = parse_time(obj["published_at"], now)
    headline = obj.get("headline")
    if not isinstance(headline, str):
        raise InvalidItem("headline is required and must be a string")
    repaired: list[str] = []
    headline = " ".join(_edge(headline, "headline", repaired).split())
    if not headline:
        raise InvalidItem("headline is empty")
    if len(headline) > MAX_HEADLINE_CHARS:
        raise InvalidItem(f"headline has {len(headline)} characters (limit {MAX_HEADLINE_CHARS})")
    return NewsItem(
        id=item_id,
        published_at=published_at,
        headline=headline,
        body=_optional_str(obj, "body", MAX_BODY_CHARS, repaired),
        source=_optional_str(obj, "source", MAX_SHORT_FIELD_CHARS, repaired),
        tickers=_tickers(obj.get("tickers"), repaired),
        url=_optional_str(obj, "url", MAX_SHORT_FIELD_CHARS, repaired),
        lang=_optional_str(obj, "lang", MAX_SHORT_FIELD_CHARS, repaired),
        extra={k: v for k, v in obj.items() if k not in KNOWN_FIELDS},
        repaired=tuple(repaired),
    )

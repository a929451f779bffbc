from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.errors import InvalidItem
from monitor.schema import MAX_MESSAGE_BYTES, parse_item

NOW = datetime(2026, 11, 28, tzinfo=timezone.utc)
_nested: object = 1
for _ in range(40):
    _nested = [_nested]
DEEP = json.dumps({"id": "x", "published_at": "2026-11-02T10:00:00Z", "headline": "a", "deep": _nested}).encode()


def item(**overrides) -> bytes:
    base = {"id": "n1", "published_at": "2026-11-02T10:00:00Z", "headline": "Acme beats estimates"}
    base.update(overrides)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_valid_item_keeps_unknown_fields_and_normalises() -> None:
    parsed = parse_item(item(tickers=["$acme", "ACME", "gbx"], extra_field={"a": 1}, headline="  Acme\nbeats  "), NOW)
    assert parsed.tickers == ("ACME", "GBX")
    assert parsed.headline == "Acme beats"
    assert parsed.extra == {"extra_field": {"a": 1}}
    assert parsed.published_at.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"id": "x", "published_at": "2026-11-02T10:00:00Z", "headline": "a", "v": NaN}', "not JSON"),
        (item(id=...), "id is required"),
        (item(id=12), "id is required"),
        (item(published_at=...), "published_at is required"),
        (item(published_at="2026-11-02 10:00:00"), "no time zone"),
        (item(published_at="1970-01-01T00:00:00Z"), "implausible"),
        (item(published_at="2031-01-01T00:00:00Z"), "implausible"),
        (item(headline=" \t "), "headline is empty"),
        (item(headline=None), "headline is required"),
        (item(headline="x" * 5000), "characters"),
        (item(tickers="ACME"), "list of strings"),
        (item(tickers=["AC ME"]), "not a symbol"),
        (item(body=12), "body must be a string"),
        (b"[" * 100 + b"]" * 100, "JSON"),
        (DEEP, "nested deeper"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), r"bytes \(limit"),
        (None, "tombstone"),
    ],
)
def test_invalid_items_say_why(raw, reason: str) -> None:
    with pytest.raises(InvalidItem, match=reason):
        parse_item(raw, NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        parse_item(raw, NOW)
    except InvalidItem:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=40,
    )
)
def test_arbitrary_json_is_accepted_or_rejected_with_a_reason(value) -> None:
    try:
        parsed = parse_item(json.dumps(value).encode(), NOW)
    except InvalidItem as exc:
        assert str(exc)
    else:
        assert parsed.headline and parsed.id

from __future__ import annotations

import pytest

from monitor.errors import UnknownLabel
from monitor.labels import (
    TOPIC_LABELS,
    canonical_label,
    canonical_sentiment,
    canonical_topic,
)
from monitor.text import clean_text, dedup_key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("negative", "bearish"), ("Positive", "bullish"), (" neutral ", "neutral"), ("BEARISH", "bearish")],
)
def test_sentiment_synonyms(raw: str, expected: str) -> None:
    assert canonical_sentiment(raw) == expected


def test_topic_names_and_label_ids() -> None:
    assert canonical_topic("m&a | investments") == "M&A | Investments"
    assert canonical_topic("LABEL_0") == "Analyst Update"
    assert canonical_topic("LABEL_19") == "Stock Movement"
    assert len(set(TOPIC_LABELS)) == 20


@pytest.mark.parametrize(("task", "raw"), [("sentiment", "angry"), ("topic", "Sports"), ("sentiment", "")])
def test_unknown_labels_raise(task: str, raw: str) -> None:
    with pytest.raises(UnknownLabel):
        canonical_label(task, raw)


def test_clean_text_unescapes_and_marks_links() -> None:
    assert clean_text("S&amp;P  up\nhttps://t.co/abc") == "S&P up [link]"


def test_dedup_key_ignores_case_links_and_punctuation_but_not_words() -> None:
    assert dedup_key("Citibank FRN Fix https://t.co/1") == dedup_key("citibank frn fix!! https://t.co/2")
    assert dedup_key("Acme beats") != dedup_key("Acme misses")

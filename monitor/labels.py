"""The label sets of bearwatch's two heads, and the mapping of the names datasets use for them."""

from __future__ import annotations

from monitor.errors import UnknownLabel

SENTIMENT_LABELS: tuple[str, ...] = ("bearish", "neutral", "bullish")

# The 20 topics of the Twitter financial news topic set, in its card order (LABEL_0 … LABEL_19).
TOPIC_LABELS: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

TASKS: tuple[str, ...] = ("topic", "sentiment")

_SENTIMENT_SYNONYMS = {
    "bearish": "bearish",
    "negative": "bearish",
    "neg": "bearish",
    "neutral": "neutral",
    "bullish": "bullish",
    "positive": "bullish",
    "pos": "bullish",
}
_TOPIC_BY_FOLDED = {name.casefold(): name for name in TOPIC_LABELS}
_TOPIC_BY_FOLDED.update({f"label_{i}": name for i, name in enumerate(TOPIC_LABELS)})


def canonical_sentiment(label: str) -> str:
    """Map a sentiment label to bearish/neutral/bullish (negative/positive accepted as synonyms).

    >>> canonical_sentiment(" Positive ")
    'bullish'
    """
    try:
        return _SENTIMENT_SYNONYMS[label.strip().casefold()]
    except KeyError:
        raise UnknownLabel(
            f"unknown sentiment label {label!r} (expected one of {', '.join(SENTIMENT_LABELS)} or negative/positive)"
        ) from None


def canonical_topic(label: str) -> str:
    """Map a topic name (any case) or LABEL_i to the topic's canonical name."""
    try:
        return _TOPIC_BY_FOLDED[" ".join(label.split()).casefold()]
    except KeyError:
        raise UnknownLabel(f"unknown topic label {label!r}") from None


def canonical_label(task: str, label: str) -> str:
    if task == "sentiment":
        return canonical_sentiment(label)
    if task == "topic":
        return canonical_topic(label)
    raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")

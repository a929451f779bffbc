"""Text normalisation shared by deduplication, grouping of near-duplicates and model input."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w$%]+")


def clean_text(text: str) -> str:
    """The text as the model sees it: HTML entities decoded, links reduced to a marker, spaces collapsed.

    Sources disagree on escaping (`&amp;` in one feed, `&` in another) and links are random
    tokens that carry no meaning but eat the token budget.

    >>> clean_text("Buy  $ACME &amp; hold https://t.co/x1")
    'Buy $ACME & hold [link]'
    """
    text = html.unescape(text)
    text = _URL.sub("[link]", text)
    return _SPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """A key equal for near-duplicates: case, links, punctuation and spacing ignored.

    >>> dedup_key("ACME beats! https://t.co/a") == dedup_key("acme beats https://t.co/b")
    True
    """
    folded = _URL.sub(" ", html.unescape(text)).casefold()
    folded = _NON_WORD.sub(" ", folded)
    return hashlib.blake2b(_SPACE.sub(" ", folded).strip().encode(), digest_size=12).hexdigest()


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# C0/C1 controls and DEL, except tab and newline (kept in bodies; headlines collapse all spaces).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def normalise_edge(text: str) -> tuple[str, bool]:
    """Text as bearwatch stores and scores it, once, at the edge: lone surrogates (a tweet cut inside
    an emoji's surrogate pair, valid as a JSON escape but not Unicode text) become U+FFFD, control
    characters other than tab and newline are dropped, and the result is NFC. Returns the text and
    whether anything changed (stored documents say which fields were repaired).

    >>> normalise_edge("Cut \\ud83d here\\x00")
    ('Cut \\ufffd here', True)
    >>> normalise_edge("Cafe\\u0301 ok")
    ('Café ok', True)
    """
    repaired = _CONTROL.sub("", _LONE_SURROGATE.sub("\ufffd", text))
    repaired = unicodedata.normalize("NFC", repaired)
    return repaired, repaired != text

"""Elasticsearch index mappings: the one place they are defined.

The Kibana dashboards are checked against these, and the Elasticsearch adapter creates the indices
from them. Only features the minimal Elasticsearch distribution supports are used (standard
analyzer, keyword, date, numeric, dense_vector).
"""

from __future__ import annotations

from monitor.labels import SENTIMENT_LABELS

EMBEDDING_DIMS = 384  # all-MiniLM-L6 width; a model of another width gets its own index

NEWS = "news"
ALERTS = "alerts"
LABELS = "labels"
STATE = "state"


def news_mapping(embedding_dims: int = EMBEDDING_DIMS) -> dict:
    return {
        "dynamic": "strict",
        "properties": {
            "id": {"type": "keyword"},
            "published_at": {"type": "date"},
            "scored_at": {"type": "date"},
            "headline": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
            "body": {"type": "text"},
            "source": {"type": "keyword"},
            "tickers": {"type": "keyword"},
            "url": {"type": "keyword", "index": False},
            "lang": {"type": "keyword"},
            "repaired": {"type": "keyword"},  # fields whose text was normalised at the edge
            "dedup_key": {"type": "keyword"},
            "content_hash": {"type": "keyword"},
            "duplicate": {"type": "boolean"},
            "duplicate_of": {"type": "keyword"},
            "sentiment": {"type": "keyword"},
            "sentiment_confidence": {"type": "float"},
            **{f"p_{label}": {"type": "float"} for label in SENTIMENT_LABELS},
            "negative": {"type": "boolean"},
            "is_negative": {"type": "byte"},  # the same as 0/1, so that a chart can average it into a share
            "topic": {"type": "keyword"},
            "topic_confidence": {"type": "float"},
            "model_version": {"type": "keyword"},
            "context_mode": {"type": "keyword"},
            "context_ids": {"type": "keyword"},
            "related_ids": {"type": "keyword"},
            "embedding": {"type": "dense_vector", "dims": embedding_dims, "index": True, "similarity": "cosine"},
            "kafka": {
                "properties": {
                    "topic": {"type": "keyword"},
                    "partition": {"type": "integer"},
                    "offset": {"type": "long"},
                }
            },
            "timings_ms": {
                "properties": {
                    stage: {"type": "float"} for stage in ("validate", "dedup", "retrieve", "score", "total")
                }
            },
        },
    }


def alerts_mapping() -> dict:
    return {
        "dynamic": "strict",
        "properties": {
            "id": {"type": "keyword"},
            "key": {"type": "keyword"},
            "key_kind": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "severity": {"type": "keyword"},
            "status": {"type": "keyword"},  # the episode: opened, updated, ended
            "delivery": {"type": "keyword"},  # the Slack message: pending, sent, failed (refused for good)
            "notified": {"type": "keyword"},  # the episode status the Slack message last showed
            "notified_severity": {"type": "keyword"},  # and the severity
            "followup": {"type": "boolean"},  # escalated or ended since: a thread reply is due
            "window_start": {"type": "date"},
            "window_end": {"type": "date"},
            "created_at": {"type": "date"},
            "updated_at": {"type": "date"},
            "observed": {"type": "float"},
            "baseline": {"type": "float"},
            "score": {"type": "float"},
            "headline_ids": {"type": "keyword"},
            "shared_items": {"type": "integer"},  # negatives filed under many tickers, weighted down
            "p_value": {"type": "double"},  # the test's tail probability (can be far below float's range)
            "window_minutes": {"type": "float"},
            "items": {"type": "float"},  # items in the test's window (weighted: many-ticker items count a share)
            "negatives": {"type": "float"},
            "tests": {"type": "keyword"},  # every test that flagged it
            "next_attempt_at": {"type": "date"},  # a failed post is tried again from then on
            "slack_ts": {"type": "keyword"},
            "attempts": {"type": "integer"},
            "last_error": {"type": "text"},
            "feedback": {"type": "keyword"},  # an analyst's verdict from Slack (false_alarm)
            "feedback_by": {"type": "keyword"},
            "feedback_at": {"type": "date"},
        },
    }


def labels_mapping(embedding_dims: int = EMBEDDING_DIMS) -> dict:
    """Analysts' labels, which are also the retrieval memory (monitor/elastic/memory.py): the
    scoring daemon adds each label's embedding by the model that serves."""
    return {
        "dynamic": "strict",
        "properties": {
            "item_id": {"type": "keyword"},
            "text": {"type": "text"},
            "topic": {"type": "keyword"},
            "sentiment": {"type": "keyword"},
            "labelled_by": {"type": "keyword"},
            "labelled_at": {"type": "date"},
            "published_at": {"type": "date"},
            "history": {"type": "object", "enabled": False},
            "dedup_key": {"type": "keyword"},
            # brute-force kNN ("flat"): exact, as the in-process memory, and no graph to build
            "embedding": {
                "type": "dense_vector",
                "dims": embedding_dims,
                "index": True,
                "similarity": "cosine",
                "index_options": {"type": "flat"},
            },
            "embedding_model": {"type": "keyword"},
            "embedded_at": {"type": "date"},
            "embedded_by": {"type": "keyword"},  # which scoring daemon (memory mirrors follow the others)
            "model_probabilities": {"type": "object", "enabled": False},
            "memory_error": {"type": "text", "index": False},
        },
    }


def state_mapping() -> dict:
    """Snapshots of the detection stage (tracker state with the offsets it reflects)."""
    return {
        "dynamic": "strict",
        "properties": {"updated_at": {"type": "date"}, "snapshot": {"type": "object", "enabled": False}},
    }


def mappings(embedding_dims: int = EMBEDDING_DIMS) -> dict[str, dict]:
    return {
        NEWS: news_mapping(embedding_dims),
        ALERTS: alerts_mapping(),
        LABELS: labels_mapping(embedding_dims),
        STATE: state_mapping(),
    }

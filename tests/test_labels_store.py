"""Analysts' labels: validation with line numbers, and corrections that keep their history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import InvalidLabel
from monitor.labels_store import make_label, read_label_file


def test_rows_are_validated_and_bad_ones_reported_with_their_line(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text(
        "item_id,text,sentiment,topic\nn1,Acme cuts outlook,negative,\nn2,   ,bearish,\nn3,Acme "
        "dividend,,Dividend\nn4,Something,angry,\nn5,No label at all,,\n"
    )
    labels, rejected = read_label_file(f, "ana")
    assert [(x.item_id, x.sentiment, x.topic) for x in labels] == [("n1", "bearish", None), ("n3", None, "Dividend")]
    assert [line for line, _ in rejected] == [3, 5, 6]
    assert "text is empty" in rejected[0][1] and "unknown sentiment" in rejected[1][1] and "neither" in rejected[2][1]


def test_a_label_without_item_id_gets_a_stable_one() -> None:
    a, b = (
        make_label({"text": "Acme  cuts outlook", "sentiment": "bearish"}, "ana"),
        make_label({"text": "Acme cuts outlook", "topic": "Earnings"}, "bob"),
    )
    assert a.item_id == b.item_id
    with pytest.raises(InvalidLabel):
        make_label({"text": "x", "sentiment": "bearish"}, "")


def test_a_jsonl_label_with_a_lone_surrogate_or_controls_is_repaired_as_news_text_is(tmp_path: Path) -> None:
    f = tmp_path / "labels.jsonl"  # JSON escapes may carry what is not Unicode text (a cut emoji)
    f.write_text('{"text": "Acme \\ud83d cuts\\u0000 outlook", "sentiment": "bearish", "item_id": "a\\udc00"}\n')
    (label,), rejected = read_label_file(f, "ana")
    assert not rejected and label.text == "Acme \ufffd cuts outlook" and label.item_id == "a\ufffd"
    label.item_id.encode("utf-8")  # storable


@pytest.mark.services
def test_corrections_replace_the_label_and_keep_history(es_client, unique_name: str, tmp_path: Path) -> None:
    import os

    from tests.conftest import ES_URL

    env = {**os.environ, "BEARWATCH_ES_URL": ES_URL, "BEARWATCH_ES_INDEX_PREFIX": unique_name}

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "bearwatch", "label", *a], env=env, capture_output=True, text=True, timeout=60
        )

    try:
        assert (
            run(
                "add", "--item-id", "n1", "--text", "Acme cuts outlook", "--sentiment", "neutral", "--by", "ana"
            ).returncode
            == 0
        )
        assert (
            run(
                "add",
                "--item-id",
                "n1",
                "--text",
                "Acme cuts outlook",
                "--sentiment",
                "bearish",
                "--topic",
                "Earnings",
                "--by",
                "bob",
            ).returncode
            == 0
        )
        f = tmp_path / "more.csv"
        f.write_text("item_id,text,sentiment\nn2,Globex beats,positive\nn3,,bearish\n")
        result = run("import", str(f), "--by", "cy")
        assert (
            result.returncode == 0
            and "1 label(s) written, 1 row(s) rejected" in result.stdout
            and ":3:" in result.stderr
        )
        doc = es_client.get(index=f"{unique_name}-labels", id="n1")["_source"]
        assert (doc["sentiment"], doc["topic"], doc["labelled_by"]) == ("bearish", "Earnings", "bob")
        assert [(h["sentiment"], h["labelled_by"]) for h in doc["history"]] == [("neutral", "ana")]
        assert es_client.get(index=f"{unique_name}-labels", id="n2")["_source"]["sentiment"] == "bullish"
        from datetime import datetime, timezone

        from monitor.elastic.labels import ElasticsearchLabels

        store = ElasticsearchLabels(es_client, f"{unique_name}-labels")
        assert store.since(datetime(2000, 1, 1, tzinfo=timezone.utc)) == 2  # two items labelled (n1 corrected once)
        assert store.since(datetime.now(timezone.utc)) == 0
    finally:
        from monitor.indices import mappings

        for name in mappings():
            es_client.indices.delete(index=f"{unique_name}-{name}", ignore_unavailable=True)


@pytest.mark.services
def test_a_large_import_is_written_in_bulk_and_corrections_in_one_file_keep_history(
    es_client, unique_name: str
) -> None:
    from datetime import datetime, timezone

    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.indices import LABELS, labels_mapping

    es_client.indices.create(index=f"{unique_name}-{LABELS}", mappings=labels_mapping())
    store = ElasticsearchLabels(es_client, f"{unique_name}-{LABELS}")
    rows = [
        make_label({"item_id": f"i{n}", "text": f"headline {n}", "sentiment": "neutral"}, "ana") for n in range(1200)
    ]
    rows += [
        make_label(
            {"item_id": "i7", "text": "headline 7", "sentiment": "bearish"}, "bob"
        ),  # corrections, in other chunks
        make_label({"item_id": "i7", "text": "headline 7", "sentiment": "bullish"}, "cy"),
    ]
    try:
        assert store.put(rows, chunk=500) == len(rows)
        assert store.since(datetime(2000, 1, 1, tzinfo=timezone.utc)) == 1200
        doc = es_client.get(index=f"{unique_name}-{LABELS}", id="i7")["_source"]
        assert doc["sentiment"] == "bullish" and [h["labelled_by"] for h in doc["history"]] == ["ana", "bob"]
    finally:
        es_client.indices.delete(index=f"{unique_name}-{LABELS}", ignore_unavailable=True)

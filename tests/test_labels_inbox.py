"""The labels inbox: files dropped in a folder become labels, then move to done/ or rejected/."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from monitor.labels_store import MemoryLabels, import_inbox


def drop(folder: Path, name: str, content: bytes | str, age_s: float = 60) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_files_are_imported_and_moved_with_a_report_of_their_bad_rows(tmp_path: Path) -> None:
    inbox, store = tmp_path / "inbox", MemoryLabels()
    inbox.mkdir()
    drop(inbox, "a.csv", "text,sentiment,topic\nAcme cuts outlook,negative,Earnings\n,bearish,\nGlobex soars,great,\n")
    drop(inbox, "b.jsonl", '{"text": "Initech dividend", "topic": "Dividend", "labelled_by": "ana"}\n')
    drop(inbox, "c.csv", "headline,mood\nx,y\n")  # no usable row at all
    drop(inbox, "bad-utf8.csv", b"text,sentiment\nfine,bullish\n\xff\xfe broken,bearish\n")
    drop(inbox, "d.csv", "text,sentiment\nStill being written,bullish\n", age_s=0)  # too fresh: left for the next poll
    drop(inbox, ".e.csv", "text,sentiment\nhidden,bullish\n")
    results = {r.name: r for r in import_inbox(inbox, store)}

    assert set(results) == {"a.csv", "b.jsonl", "c.csv", "bad-utf8.csv"}
    assert results["a.csv"].written == 1 and [line for line, _ in results["a.csv"].rejected] == [3, 4]
    report = results["a.csv"].moved_to.with_name(results["a.csv"].moved_to.name + ".rejected.txt").read_text()
    assert "line 3: text is empty" in report and "line 4: unknown sentiment" in report
    assert results["a.csv"].moved_to.parent.name == "done" and results["c.csv"].moved_to.parent.name == "rejected"
    assert results["bad-utf8.csv"].written == 1 and results["bad-utf8.csv"].rejected == [
        (3, "not UTF-8 (undecodable bytes)")
    ]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".e.csv", "d.csv"]
    docs = {d["text"]: d for d in store.docs.values()}
    assert (
        docs["Acme cuts outlook"]["labelled_by"] == "inbox:a.csv" and docs["Initech dividend"]["labelled_by"] == "ana"
    )


def test_a_file_imported_twice_changes_nothing(tmp_path: Path) -> None:
    inbox, store = tmp_path / "inbox", MemoryLabels()
    inbox.mkdir()
    content = "text,sentiment\nAcme cuts outlook,bearish\n"
    drop(inbox, "a.csv", content)
    import_inbox(inbox, store)
    before = store.since(datetime(2000, 1, 1, tzinfo=timezone.utc))
    first = dict(next(iter(store.docs.values())))
    drop(inbox, "a.csv", content)  # as after a crash between storing and moving
    import_inbox(inbox, store)
    assert store.since(datetime(2000, 1, 1, tzinfo=timezone.utc)) == before == 1
    assert next(iter(store.docs.values())) == first and "history" not in first

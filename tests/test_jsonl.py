"""All-or-nothing JSON-lines batches, and readers that survive a torn last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.jsonl import append_batch, read_objects


def test_a_failed_batch_leaves_every_file_as_it_was(tmp_path: Path) -> None:
    a, broken = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append_batch({a: [json.dumps({"n": 1})]})
    before = a.read_bytes()
    broken.mkdir()  # a fault: the second file of the batch cannot be opened
    with pytest.raises(OSError):
        append_batch({a: [json.dumps({"n": 2}), json.dumps({"n": 3})], broken: ["{}"]})
    assert a.read_bytes() == before  # the first file's half of the batch was cut back


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    f.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "headl')  # a write cut short by a kill or a full disk
    assert [d["id"] for d in read_objects(f)] == ["a", "b"]
    assert f.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'  # the next append starts on a clean line
    append_batch({f: ['{"id": "c"}']})
    assert [d["id"] for d in read_objects(f)] == ["a", "b", "c"]

"""The scoring daemon as its index grows: items/s and peak RSS at 10k, 100k and 1M documents.

    python bench/daemon_scale.py [--sizes 10000,100000,1000000] [--items 10000] [--json FILE]

Against the local Kafka and Elasticsearch (deploy/local/services.sh), on one fresh set of indices.
The news index is filled with the real StockNet stream repeated, as bench/embedded_scale.py fills the
embedded store (each copy with new ids, 830 days earlier than the next; the documents the scoring
stage writes, without vectors as with the default `retrieval.history = "bm25"`), so every measured
item's 72-hour look-back holds real history and its related-history and dedup queries run against
an index of that size. At each size, `--items` more items of the same repeated stream (the ones
that come next) go through a fresh topic as a backlog into the real scoring stage
(bench/scoring_stage.run_stage: Kafka source, the shipped model, Elasticsearch store, related
history on), in a fresh process that reports its items/s (first to last commit: start-up excluded),
where the time goes, and its peak resident set (VmHWM); what it writes stays in the index, as a
daemon's own writes do. The last row runs the same number of items with related history off
against the largest index. At each size the index is filled to one run short of it, the bench
waits until Elasticsearch has no merge running (the fill's merges are not the daemon's work; a
`settle s` column says how long), and a first, cold pass fills the rest: the first queries against
a freshly bulk-loaded index pay for loading its files, where an index that grew to that size over
months is warm. Its rate is reported (`cold`) beside the measured pass's. Prints
a table with ratios to the first size; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from embedded_scale import as_document, base_items, measured_run, repeated  # noqa: E402

from monitor.resources import shipped_model  # noqa: E402


def _settings(prefix: str):
    from dataclasses import replace

    from monitor.settings import load_settings

    settings = load_settings(env={**os.environ, "BEARWATCH_METRICS_PORT": "0"})
    return replace(settings, elasticsearch=replace(settings.elasticsearch, index_prefix=prefix))


def fill(prefix: str, items: list[dict], start: int, count: int, copies: int) -> float:
    """Documents start .. start+count of the repeated stream, bulk-written as the scoring stage
    stores them, then one refresh."""
    from elasticsearch import helpers

    from monitor.elastic.client import connect, ensure_indices
    from monitor.progress import tracked

    settings = _settings(prefix).elasticsearch
    es = connect(settings)
    ensure_indices(es, settings, 384)
    index = settings.index("news")
    began = time.perf_counter()
    actions = (
        {"_index": index, "_id": d["id"], "_source": d}
        for d in (as_document(item) for item in repeated(items, start, count, copies))
    )
    filling = tracked(actions, f"{index}: {start:,} to {start + count:,}", total=count, unit="docs")
    for ok, info in helpers.streaming_bulk(es, filling, chunk_size=2000, raise_on_error=False, request_timeout=300):
        if not ok:
            raise SystemExit(f"a history document was refused: {info}")
    es.indices.refresh(index=index)
    return time.perf_counter() - began


def settle(prefix: str, limit_s: float = 900.0) -> float:
    """Wait until Elasticsearch has no merge running on the index: the bulk fill's own merges are
    not the measured daemon's work (an index that grew over months has long merged its segments)."""
    from monitor.elastic.client import connect

    settings = _settings(prefix).elasticsearch
    es = connect(settings)
    began = time.perf_counter()
    while time.perf_counter() - began < limit_s:
        stats = es.indices.stats(index=settings.index("news"), metric="merge")
        if stats["_all"]["total"]["merges"]["current"] == 0:
            break
        time.sleep(1.0)
    else:
        raise SystemExit(f"merges still running after {limit_s:.0f} s")
    return time.perf_counter() - began


def docs_in(prefix: str) -> int:
    from monitor.elastic.client import connect

    settings = _settings(prefix).elasticsearch
    es = connect(settings)
    es.indices.refresh(index=settings.index("news"))
    return int(es.count(index=settings.index("news"))["count"])


def measure(prefix: str, items_file: str, history: str, prefetch: str = "on") -> None:
    """In a fresh process: the scoring stage on the items in items_file (a backlog); one JSON line."""
    import resource

    from scoring_stage import run_stage

    values = [line.encode() for line in Path(items_file).read_text(encoding="utf-8").splitlines() if line]
    result = run_stage(
        values,
        str(shipped_model()),
        history=history,
        extra_env={"BEARWATCH_ES_INDEX_PREFIX": prefix},
        prefetch=prefetch == "on",
    )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def run_measure(prefix: str, work: Path, items: list[dict], start: int, count: int, copies: int, history: str) -> dict:
    return measured_run(__file__, prefix, work / "items.jsonl", repeated(items, start, count, copies), count, history)


def remove(prefix: str) -> None:
    from monitor.elastic.client import connect
    from monitor.indices import mappings

    settings = _settings(prefix).elasticsearch
    es = connect(settings)
    for name in mappings():
        es.indices.delete(index=settings.index(name), ignore_unavailable=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes, in documents, ascending")
    parser.add_argument("--items", type=int, default=10000, help="items scored at each size")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the indices (default: removed at the end)")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from monitor.progress import log_lines

    log_lines()
    import logging

    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    if args.measure:
        measure(*args.measure)
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    items = base_items()
    prefix = f"bench-scale-{uuid.uuid4().hex[:6]}"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / prefix
    work.mkdir(parents=True)
    rows, have = [], 0
    copies = -(-(sizes[-1] + 2 * args.items) // len(items))
    try:
        for size in sizes:
            # Filled to `size` less one run, which is the cold pass: the first queries against a
            # freshly bulk-loaded index (and a cold daemon) pay for loading its files; an index that
            # grew to this size over months is warm. Reported beside the measured pass, not instead.
            fill_s = fill(prefix, items, have, size - args.items - have, copies)
            settle_s = settle(prefix)
            cold = run_measure(prefix, work, items, size - args.items, args.items, copies, "bm25")
            row = {"index_docs": docs_in(prefix), "fill_s": round(fill_s, 1), "settle_s": round(settle_s, 1)}
            row.update(run_measure(prefix, work, items, size, args.items, copies, "bm25"))
            row["cold_items_per_s"] = cold["items_per_s"]
            have = size + args.items
            rows.append(row)
            print(json.dumps(row), flush=True)
        off = {"index_docs": docs_in(prefix), "fill_s": 0.0, "related": "off"}
        off.update(run_measure(prefix, work, items, have, args.items, copies, "off"))
        rows.append(off)
    finally:
        if not args.keep:
            remove(prefix)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    first = rows[0]["items_per_s"]
    print(
        f"\nscoring daemon (backlog, local Kafka + Elasticsearch on the same machine), {args.items} StockNet items "
        f"scored at each index size; {platform.machine()}, {os.cpu_count()} cores"
    )
    print(
        f"{'index docs':>12} {'related':>8} {'items/s':>8} {'vs first':>9} {'related ms':>11} {'dedup ms':>9} "
        f"{'wall ms/item':>13} {'peak RSS MB':>12} {'fill s':>7} {'settle s':>9} {'cold items/s':>13}"
    )
    for r in rows:
        stage = r["stage_ms_per_item"]
        print(
            f"{r['index_docs']:>12,} {r.get('related', 'bm25'):>8} {r['items_per_s']:>8.1f} "
            f"{r['items_per_s'] / first:>9.2f} {stage.get('retrieve', 0.0):>11.3f} {stage.get('dedup', 0.0):>9.3f} "
            f"{r['wall_ms_per_item']:>13.3f} {r['peak_rss_mb']:>12.1f} {r['fill_s']:>7.1f} "
            f"{r.get('settle_s', 0.0):>9.1f} {r.get('cold_items_per_s', '-'):>13}"
        )
    if args.json:
        record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "items": args.items, "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
